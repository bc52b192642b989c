/**
 * A node's bundle with one file damaged (cut short when copied, emptied, overwritten with garbage): the node
 * refuses to start and names the file, instead of a nats-server configuration error about a generated file,
 * or (a damaged node.creds) running on with a leaf that never connects.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawn, spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { loadHubSecurity, loadNodeSecurity } from "./security.ts";
import { loadSiteSecurity } from "./site-security.ts";
import { cliPath, nodeBinary, runCli } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";

let base: string;
let keys: string;
beforeAll(async () => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-bundle-files-"));
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  await issueNode({ dir: keys, node: "edge-a" });
});
afterAll(() => {
  if (base) rmSync(base, { recursive: true, force: true });
});

const damages: Record<string, (bytes: Buffer) => Buffer> = {
  "cut short": (bytes) => bytes.subarray(0, Math.floor(bytes.length / 2)),
  emptied: () => Buffer.alloc(0),
  garbage: () => Buffer.from("not what it should be\n"),
};

/** A copy of edge-a's bundle with `file` damaged. */
function damagedBundle(file: string, damage: string): string {
  const bundle = join(base, `${file}-${damage.replace(" ", "-")}`);
  cpSync(join(keys, "nodes", "edge-a"), bundle, { recursive: true });
  writeFileSync(join(bundle, file), damages[damage](readFileSync(join(bundle, file))), { mode: 0o600 });
  return bundle;
}

describe("a damaged bundle file", () => {
  for (const file of ["node.creds", "node.key", "ca.crt", "swarm.key"]) {
    for (const damage of Object.keys(damages)) {
      it(`${file} ${damage}: refused at load, naming the file`, () => {
        const bundle = damagedBundle(file, damage);
        expect(() => loadNodeSecurity(bundle, "edge-a")).toThrow(`${join(bundle, file)} is damaged (`);
      });
    }
  }

  it("node.creds cut short: the agent exits at once naming it, rather than running with a leaf that never connects", async () => {
    const bundle = damagedBundle("node.creds", "cut short");
    const child = spawn(nodeBinary, [cliPath, "agent", "--node", "edge-a", "--hub", "tls://127.0.0.1:1", "--data", join(base, "agent-data"), "--keys", bundle], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    // an agent that runs on is stopped cleanly (SIGTERM: it stops its nats-server) after 15 s, and fails the test
    const timer = setTimeout(() => child.kill("SIGTERM"), 15_000);
    const code = await new Promise<number | null>((resolveExit) => child.once("exit", (exitCode) => resolveExit(exitCode)));
    clearTimeout(timer);
    expect(output).toContain(`${join(bundle, "node.creds")} is damaged (no whole user JWT in it): copy node 'edge-a''s bundle again`);
    expect(code, output.slice(-2000)).not.toBe(0);
    expect(output).not.toContain("Credentials file");
  }, 30_000);
});

describe("a damaged file of a hub's keys", () => {
  /** A copy of the keys directory with `file` cut short. */
  function damagedKeys(file: string): string {
    const copy = join(base, `hub-${file.replaceAll("/", "-")}`);
    cpSync(keys, copy, { recursive: true });
    const bytes = readFileSync(join(copy, file));
    writeFileSync(join(copy, file), bytes.subarray(0, Math.floor(bytes.length / 3)), { mode: 0o600 });
    return copy;
  }

  for (const file of ["hub/hub.key", "hub/hub.crt", "hub/ca.crt", "operator.jwt", "hub/sys.creds", "hub/publisher.creds", "accounts/SYS.jwt"]) {
    it(`${file} cut short: refused at load, naming the file`, () => {
      const copy = damagedKeys(file);
      expect(() => loadHubSecurity(copy, { resolverDir: join(copy, "resolver") })).toThrow(`${join(copy, file)} is damaged`);
    });
  }

  it("hub.crt cut short: the hub exits naming it, not with 'unexpected error' and a stack", async () => {
    const copy = damagedKeys("hub/hub.crt");
    const result = await runCli(["hub", "--name", "hub-1", "--data", join(base, "hub-data"), "--keys", copy, "--manifests", join(base, "no-manifests"), "--metrics-listen", "off"], 30_000);
    expect(result.stderr).toContain(`${join(copy, "hub/hub.crt")} is damaged`);
    expect(result.stderr).not.toContain("unexpected error");
    expect(result.code).toBe(1);
  }, 40_000);
});

describe("a damaged identity of a node that joined with a token", () => {
  for (const [file, damage] of [
    ["node.creds", (bytes: Buffer) => bytes.subarray(0, 300)],
    ["joined.json", () => Buffer.from('{"site":')],
  ] as const) {
    it(`${file}: the agent exits naming it, not with 'unexpected error' and a stack`, async () => {
      const token = join(base, "token");
      const made = await runCli(["keys", "token", "--dir", keys, "--url", "tls://hub-1.example.net:4222", "--out", token]);
      expect(made.code, made.stderr).toBe(0);
      // what `agent --join` left in DATA/keys, as issued (this bundle's files are what an enrolment writes there)
      const data = join(base, `joined-${file}`);
      cpSync(join(keys, "nodes", "edge-a"), join(data, "keys"), { recursive: true });
      writeFileSync(join(data, "keys", "joined.json"), JSON.stringify({ token: "t", tags: [] }));
      writeFileSync(join(data, "keys", file), damage(readFileSync(join(data, "keys", file))), { mode: 0o600 });
      const result = await runCli(["agent", "--node", "edge-a", "--hub", "tls://127.0.0.1:1", "--data", data, "--join-file", token], 30_000);
      expect(result.stderr).toContain(`${join(data, "keys", file)} of node 'edge-a' is damaged`);
      expect(result.stderr).not.toContain("unexpected error");
      expect(result.code).toBe(1);
    }, 40_000);
  }
});

describe("a damaged file of a site server's bundle", () => {
  for (const file of ["site.json", "site.key", "site.crt", "ca.crt", "claims.creds", "local.creds", "servers/shop-7-1.creds", "members/edge-a.creds"]) {
    it(`${file} cut short: refused at load, naming the file (before, the creds ones left a leaf remote that never connected)`, async () => {
      const copy = join(base, `site-${file.replaceAll("/", "-")}`);
      cpSync(join(siteKeys(), "sites", "shop-7"), copy, { recursive: true });
      const bytes = readFileSync(join(copy, file));
      writeFileSync(join(copy, file), bytes.subarray(0, 40), { mode: 0o600 });
      expect(() => loadSiteSecurity(copy, { site: "shop-7", server: "shop-7-1", resolverDir: join(copy, "resolver") })).toThrow(`${join(copy, file)} is damaged (`);
    });
  }
});

let siteKeysDir: string | undefined;
/** The test's keys with site shop-7 issued (edge-a a member), made once. */
function siteKeys(): string {
  if (!siteKeysDir) {
    siteKeysDir = keys;
    const result = spawnSync(nodeBinary, [cliPath, "keys", "issue-site", "--dir", keys, "--site", "shop-7", "--members", "edge-a", "--servers", "shop-7-1"], { encoding: "utf8" });
    expect(result.status, result.stderr).toBe(0);
  }
  return siteKeysDir;
}
