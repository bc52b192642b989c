/** `leafmesh demo` as a newcomer runs it: what it prints is true, and Ctrl-C stops everything. */
import { execFileSync, spawn } from "node:child_process";
import { appendFileSync, readFileSync } from "node:fs";
import { stringify } from "yaml";
import { describe, expect, it } from "vitest";
import { eventually } from "./support/ports.ts";
import { cliPath, nodeBinary, runCli, tempDir } from "./support/processes.ts";

describe("leafmesh demo", () => {
  it("starts a hub and agents, prints proxies that answer and commands that work, and stops cleanly on SIGINT", { timeout: 150_000 }, async () => {
    const data = tempDir();
    const child = spawn(nodeBinary, [cliPath, "demo", "--data", data], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      await eventually(() => output.includes("Live events"), 90_000, "the demo to come up").catch((error: Error) => {
        throw new Error(`${error.message}; it printed:\n${output}`);
      });
      const proxies = [...output.matchAll(/curl (http:\/\/127\.\d+\.\d+\.\d+:\d+\/)\s+# (demo\/\w+):http\/TCP through (edge-\d)'s proxy(, tunnelled to edge-\d)?/g)];
      expect(proxies.map((match) => `${match[2]}@${match[3]}`).sort()).toEqual(["demo/api@edge-1", "demo/api@edge-2", "demo/web@edge-1", "demo/web@edge-2"]);
      for (const [, url, service] of proxies) {
        const body = await (await fetch(url)).text();
        expect(body).toContain(`hello from ${service.split("/")[1]}`);
      }
      // The ingress gateway it prints answers a client outside the mesh, as printed: /api to api (on edge-1), / to web (on edge-2, through the tunnel).
      const gatewayLine = /(curl -H 'Host: shop\.demo\.example' (http:\/\/127\.0\.0\.1:\d+)\/api)\s+#/.exec(output);
      expect(gatewayLine, output).not.toBeNull();
      const viaGateway = (path: string) => execFileSync("curl", ["-s", "--max-time", "5", "-H", "Host: shop.demo.example", `${gatewayLine![2]}${path}`], { encoding: "utf8" });
      await eventually(() => viaGateway("/api").includes("hello from api"), 30_000, "the demo's gateway to route /api");
      expect(viaGateway("/")).toContain("hello from web, served by a backend on node edge-2");
      // The cross-node requests went through the tunnel: its path shows up live.
      await eventually(() => /mesh\.edge-\d\.tunnel\.path \{[^}]*"kind":"direct"/.test(output), 15_000, "a tunnel path event");
      const metricsUrl = /curl (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(output)![1];
      expect(await (await fetch(metricsUrl)).text()).toContain("leafmesh_catalog_objects");
      const digLine = /dig @127\.0\.0\.1 -p (\d+) web\.demo\.svc\.cluster\.local/.exec(output)!;
      expect(execFileSync("dig", ["@127.0.0.1", "-p", digLine[1], "web.demo.svc.cluster.local", "+short"], { encoding: "utf8" }).trim()).toBe("198.19.0.10");
            // The hub it starts keeps glibc's malloc arenas: the one arena is for the demo's own process and its agents (bin/leafmesh.js).
      const hubPid = /kill (\d+)\s+# stop the hub/.exec(output)![1];
      const hubEnvironment = readFileSync(`/proc/${hubPid}/environ`, "utf8").split("\0");
      expect(hubEnvironment.filter((entry) => /^(MALLOC_ARENA_MAX|LEAFMESH_ARENAS_DEFAULTED)=/.test(entry))).toEqual([]);
      // The status command it prints works, with the demo's keys.
      const statusLine = /npx leafmesh (status --keys \S+ --node edge-1 --nats \S+)/.exec(output)![1];
      const status = await runCli(statusLine.split(" ").concat(["--json"]));
      expect(status.code, status.stderr).toBe(0);
      expect(JSON.parse(status.stdout).services.map((service: { name: string }) => service.name).sort()).toEqual(["api", "web"]);
      // Editing the manifest file it names shows up live.
      const manifest = /\$EDITOR (\S+)/.exec(output)![1];
      appendFileSync(manifest, `---\n${stringify({ apiVersion: "v1", kind: "Service", metadata: { name: "extra", namespace: "demo" }, spec: { clusterIP: "198.19.0.99", ports: [{ port: 80 }] } })}`);
      await eventually(() => output.includes('mesh.edge-1.controller.catalog {"op":"put","key":"svc.demo.extra"'), 15_000, "the edit to show up live");
    } finally {
      child.kill("SIGINT");
    }
    expect(await exited).toBe(0);
    expect(output).toContain("stopped.");
  });
});
