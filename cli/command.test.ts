/** The command framework: one schema gives flags, variables, the config file, validation messages and help. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { tempDir } from "../test/support/processes.ts";
import { defineCommand, type Command } from "./command.ts";
import { option } from "./options.ts";
import { LeafmeshError } from "../lib/errors.ts";

async function run(command: Command, argv: string[], env: Record<string, string> = {}) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
  stderr.on("data", (chunk: Buffer) => (err += chunk.toString()));
  const code = await command.main(argv, { stdout, stderr, env, signal: new AbortController().signal });
  return { code, stdout: out, stderr: err };
}

function probe() {
  const seen: unknown[] = [];
  const command = defineCommand({
    name: "probe",
    summary: "a command for these tests",
    configFile: true,
    options: {
      name: option.text({ required: true, value: "NAME", description: "a name" }),
      listen: option.hostPort({ default: "127.0.0.1:4222", description: "an address" }),
      metrics: option.hostPort({ default: "off", off: true, description: "an address or off" }),
      ttl: option.integer({ default: 6_000, value: "MS", description: "a time" }),
      peers: option.list({ value: "URL,…", description: "a list" }),
      mode: option.choice(["a", "b"] as const, { default: "a", description: "a choice" }),
      verbose: option.flag({ description: "a switch" }),
      gates: option.text({ value: "NAME=URL;…", description: "a list separated by ';'" }),
    },
    async run(values) {
      seen.push(values);
      return 0;
    },
  });
  return { command, seen };
}

describe("defineCommand on a schema", () => {
  it("turns flags into typed values, with the defaults the help shows", async () => {
    const { command, seen } = probe();
    expect((await run(command, ["--name", "x", "--peers", "a, b", "--verbose"])).code).toBe(0);
    expect(seen[0]).toEqual({ name: "x", listen: { host: "127.0.0.1", port: 4222 }, metrics: undefined, ttl: 6000, peers: ["a", "b"], mode: "a", verbose: true, gates: undefined, config: undefined });
    const help = command.help();
    expect(help).toContain("--listen H:P");
    expect(help).toMatch(/--ttl MS\s+a time \(default: 6000; env LEAFMESH_TTL\)/);
    expect(help).toMatch(/--name NAME\s+a name \(required; env LEAFMESH_NAME\)/);
    expect(help).toMatch(/--mode a\|b/);
    expect(help).toMatch(/--config FILE/);
  });

  it("takes a flag over a variable over the config file over the default", async () => {
    const { command, seen } = probe();
    const file = join(tempDir(), "probe.yaml");
    writeFileSync(file, "name: from-file\nttl: 100\npeers: [p1, p2]\nmode: b\nlisten: 127.0.0.1:1\nverbose: true\n");
    expect((await run(command, ["--config", file, "--ttl", "300"], { LEAFMESH_TTL: "200", LEAFMESH_MODE: "a" })).code).toBe(0);
    expect(seen[0]).toMatchObject({ name: "from-file", ttl: 300, peers: ["p1", "p2"], mode: "a", listen: { host: "127.0.0.1", port: 1 }, verbose: true });
  });

  it("names the field and where its bad value came from: flag, variable or file key", async () => {
    const { command, seen } = probe();
    const flag = await run(command, ["--name", "x", "--ttl", "0"]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain("--ttl: '0' is not a whole number of at least 1");
    const variable = await run(command, ["--name", "x"], { LEAFMESH_LISTEN: "nowhere" });
    expect(variable.stderr).toContain("LEAFMESH_LISTEN: 'nowhere' is not host:port");
    const file = join(tempDir(), "probe.yaml");
    writeFileSync(file, "name: x\nmode: c\nlisten-to: 1\nverbose: sometimes\n");
    const fromFile = await run(command, ["--config", file]);
    expect(fromFile.code).toBe(2);
    expect(fromFile.stderr).toContain(`${file}: listen-to: not an option of this command`);
    expect(fromFile.stderr).toContain(`${file}: verbose: 'sometimes' is not true or false`);
    writeFileSync(file, "name: x\nmode: c\n");
    expect((await run(command, ["--config", file])).stderr).toContain(`${file}: mode: 'c' is not one of a, b`);
    const missing = await run(command, []);
    expect(missing.stderr).toContain("--name is required (a name)");
    const unreadable = await run(command, ["--config", join(tempDir(), "none.yaml")]);
    expect(unreadable.stderr).toContain("--config: cannot read");
    // A YAML list for a field of one value is refused, not read as its items joined; for a list field it is the list.
    writeFileSync(file, "name: [edge-c]\nttl: [1, 2]\npeers: [a, b]\n");
    const listed = await run(command, ["--config", file]);
    expect(listed.code).toBe(2);
    expect(listed.stderr).toContain(`${file}: name: expected one value (NAME), got a list`);
    expect(listed.stderr).toContain(`${file}: ttl: expected one value (MS), got a list`);
    expect(listed.stderr).not.toContain("peers");
    writeFileSync(file, "name: x\npeers: [a, b]\ngates: [a=nats://h:1, b=nats://h:2]\n");
    expect((await run(command, ["--config", file])).code).toBe(0);
    expect(seen.pop()).toMatchObject({ name: "x", peers: ["a", "b"], gates: "a=nats://h:1;b=nats://h:2" });
    writeFileSync(file, "- a list\n");
    expect((await run(command, ["--config", file])).stderr).toContain("expected a mapping of option names");
    expect(seen).toEqual([]);
  });

  it("says an error's causes once each: a cause the message already carries is not said again", async () => {
    const failing = (error: Error) =>
      defineCommand({
        name: "fail",
        summary: "a command that fails",
        options: {},
        async run() {
          throw error;
        },
      });
    const remote = new Error("no node 'edge-z' is known here (known: edge-a, edge-b)");
    const repeated = await run(failing(new LeafmeshError("INTERNAL", `status --why: ${remote.message}`, { cause: remote })), []);
    expect(repeated.code).toBe(1);
    expect(repeated.stderr).toBe("leafmesh fail: status --why: no node 'edge-z' is known here (known: edge-a, edge-b)\n");
    const inner = new Error("connect ECONNREFUSED 127.0.0.1:4222");
    const chained = await run(failing(new LeafmeshError("NATS_UNREACHABLE", "cannot connect to NATS", { cause: new Error("connection refused", { cause: inner }) })), []);
    expect(chained.stderr).toBe("leafmesh fail: cannot connect to NATS\n  cause: connection refused: connect ECONNREFUSED 127.0.0.1:4222\n");
  });
});
