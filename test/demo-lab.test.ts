/** `leafmesh demo --lab` (root): what it prints works inside the namespaces, and Ctrl-C removes the whole lab, its resolver files too. */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { eventually } from "./support/ports.ts";
import { cliPath, nodeBinary } from "./support/processes.ts";

describe("leafmesh demo --lab", () => {
  it("runs the mesh behind NATs, answers the commands it prints, and tears down on SIGINT", { timeout: 200_000 }, async () => {
    const child = spawn(nodeBinary, [cliPath, "demo", "--lab"], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      await eventually(() => output.includes("Ctrl-C stops and removes the lab"), 150_000, "the lab demo to come up").catch((error: Error) => {
        throw new Error(`${error.message}; it printed:\n${output}`);
      });
      const curls = [...output.matchAll(/^ {2}(ip netns exec \S+ curl \S+)\s+#/gm)].map((match) => match[1].split(" "));
      expect(curls).toHaveLength(2);
      const bodies = curls.map((argv) => execFileSync(argv[0], [...argv.slice(1, -1), "-s", "--max-time", "10", argv.at(-1)!], { encoding: "utf8" }));
      expect(bodies[0]).toContain("hello from web on node-b, behind a full-cone NAT");
      expect(bodies[1]).toContain("hello from api on node-c, behind a symmetric NAT");
    } finally {
      child.kill("SIGINT");
    }
    expect(await exited).toBe(0);
    expect(output).toContain("stopped.");
    expect(execFileSync("ip", ["netns", "list"], { encoding: "utf8" })).not.toContain("lmdm-");
    // Nor its resolver files: /etc/netns/<namespace>, and /etc/netns itself left empty on a machine that had none.
    const netnsEtc = existsSync("/etc/netns") ? readdirSync("/etc/netns") : undefined;
    expect(netnsEtc?.filter((name) => name.startsWith("lmdm-")) ?? []).toEqual([]);
    expect(netnsEtc?.length, "an empty /etc/netns left behind").not.toBe(0);
  });
});
