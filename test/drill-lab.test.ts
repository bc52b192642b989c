/**
 * `leafmesh drill` (issue 18 item 4) in the NAT lab, with root: a hub on the WAN
 * and a real `leafmesh agent` behind a NAT, with cluster DNS and nftables
 * interception, serving `web` from a backend on its own host. The drill cuts
 * the agent's upstream for some seconds, and a test process watches from
 * outside at the same time: its own DNS and HTTP requests in the node's
 * namespace, the hub's view of its leaf connections, and a service added at
 * the hub during the cut. The drill's report must match: the checks passed
 * as the observer's did, the new service was not there during the cut and
 * was there when the drill said the catalog had caught up. Also: it refuses
 * on a hub; Ctrl-C restores the link at once; a drill killed outright
 * (SIGKILL) leaves a cut the kernel lifts by itself.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatDrillReport, type DrillReport } from "../cli/drill-report.ts";
import { buildNatLab, hubAddresses, type NatLab } from "../lab/nat.ts";
import { inNamespace, runCommand } from "../lab/netns.ts";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { cliPath, launch, nodeBinary, stopAllProcesses, tempDir } from "./support/processes.ts";

const prefix = "lmdr-";
let lab: NatLab;
const backgrounds: ChildProcess[] = [];
const dataDir = `/tmp/${prefix}node-a`;

interface NodeView {
  status: { links: { direction: string; up: boolean }[]; catalogObjects: number };
  services: { name: string }[];
}

async function cliIn(namespace: string, args: string[], timeoutMs = 30_000) {
  return runCommand(inNamespace(namespace, [nodeBinary, cliPath, ...args]), { timeoutMs });
}

async function statusIn(namespace: string): Promise<NodeView> {
  const result = await cliIn(namespace, ["status", "--json", "--nats", "nats://127.0.0.1:4222", "--timeout", "2000"], 15_000);
  if (result.code !== 0) throw new Error(`status in ${namespace}: ${result.stderr}`);
  return JSON.parse(result.stdout) as NodeView;
}

/** Starts `leafmesh drill` in a namespace; resolves with its exit code and output. */
function startDrill(namespace: string, args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  const argv = inNamespace(namespace, [nodeBinary, cliPath, "drill", "--nats", "nats://127.0.0.1:4222", ...args]);
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  backgrounds.push(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  return { child, done: new Promise((resolve) => child.once("exit", (code) => resolve({ code, stdout, stderr }))) };
}

const cutInForce = async (namespace: string) => (await runCommand(inNamespace(namespace, ["nft", "list", "table", "inet", "leafmesh_drill"]))).code === 0;

describe.sequential("leafmesh drill in the NAT lab", () => {
  let manifests: string;
  let node: string;
  let hubNamespace: string;
  let dnsAddress: string;

  const dig = async (name: string) => {
    const result = await runCommand(inNamespace(node, ["dig", "+short", "+time=1", "+tries=1", `@${dnsAddress}`, `${name}.demo.svc.cluster.local`]), { timeoutMs: 5_000 });
    return result.code === 0 && /^\d+\.\d+\.\d+\.\d+$/m.test(result.stdout);
  };
  const curl = async () => {
    const result = await runCommand(inNamespace(node, ["curl", "-s", "--max-time", "1", "http://198.19.0.10/"]), { timeoutMs: 5_000 });
    return result.code === 0 && result.stdout === "web on node-a\n";
  };
  /** The leaf connections the hub holds (its monitor port), as an observer on the far side of the cut sees them. */
  const hubLeafs = async () => {
    const result = await runCommand(inNamespace(hubNamespace, ["curl", "-s", "--max-time", "1", "http://127.0.0.1:8222/leafz"]), { timeoutMs: 5_000 });
    return result.code === 0 ? ((JSON.parse(result.stdout) as { leafs?: { ip: string; port: number }[] }).leafs ?? []).map((leaf) => `${leaf.ip}:${leaf.port}`) : [];
  };

  beforeAll(async () => {
    lab = await buildNatLab({ prefix, sites: [{ name: "a", nat: "port-restricted" }] });
    const host = lab.sites[0].hosts[0];
    node = host.namespace;
    hubNamespace = lab.hub.namespace;
    dnsAddress = host.address;
    manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10", endpoints: [{ ip: host.address, node: "node-a" }] }));
    const script = `require("node:http").createServer((q, s) => s.end("web on node-a\\n")).listen(8080, "0.0.0.0")`;
    const argv = inNamespace(node, [nodeBinary, "-e", script]);
    backgrounds.push(spawn(argv[0], argv.slice(1), { stdio: "ignore" }));
    launch(
      "hub-1",
      ["hub", "--insecure", "--name", "hub-1", "--data", tempDir(), "--listen", "0.0.0.0:4222", "--leaf-listen", "0.0.0.0:7422", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--manifests", manifests],
      "", "", hubNamespace,
    );
    await eventually(async () => (await statusIn(hubNamespace)).services.length === 1, 45_000, "the hub to publish");
    rmSync(dataDir, { recursive: true, force: true });
    launch(
      "node-a",
      ["agent", "--insecure", "--node", "node-a", "--hub", `nats://${hubAddresses[0]}:7422`, "--data", dataDir, "--nats-listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222",
        "--metrics-listen", "off", "--dns", `${host.address}:53`, "--upstream", "127.0.0.1:1", "--intercept", "nftables"],
      "", "", node,
    );
    await eventually(async () => (await statusIn(node)).services.length === 1 && (await curl()), 60_000, "node-a to hold the catalog and serve web");
  }, 180_000);

  afterAll(async () => {
    for (const child of backgrounds) child.kill("SIGKILL");
    await stopAllProcesses();
    await lab?.teardown();
    rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it("refuses on a hub", async () => {
    const result = await cliIn(hubNamespace, ["drill", "--nats", "nats://127.0.0.1:4222", "--seconds", "5"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("hub-1 is a hub");
    expect(await cutInForce(hubNamespace)).toBe(false);
  }, 60_000);

  it("cuts the upstream, checks every second, restores, and reports what an outside observer saw", async () => {
    const seconds = 22;
    const leafBefore = await hubLeafs();
    expect(leafBefore).toHaveLength(1);
    const drill = startDrill(node, ["--seconds", String(seconds), "--json"]);
    await eventually(() => cutInForce(node), 20_000, "the drill's cut");
    const cutSeen = Date.now();
    // A change at the hub during the cut: the node must not see it before the restore, and must once caught up.
    writeManifest(manifests, "late.yaml", sampleService({ name: "late", clusterIP: "198.19.0.12", endpoints: [{ ip: lab.sites[0].hosts[0].address, node: "node-a" }] }));
    const observed: { at: number; cut: boolean; web: boolean; http: boolean; late: boolean }[] = [];
    let exited = false;
    void drill.done.then(() => (exited = true));
    // The observer: every 500 ms until the drill exits (bounded by the drill's own bound).
    while (!exited && Date.now() - cutSeen < (seconds + 150) * 1_000) {
      const [cut, web, http, late] = await Promise.all([cutInForce(node), dig("web"), curl(), dig("late")]);
      observed.push({ at: Date.now(), cut, web, http, late });
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const { code, stdout, stderr } = await drill.done;
    const exitedAt = Date.now();
    expect(code, stderr).toBe(0);
    const report = JSON.parse(stdout) as DrillReport;
    if (process.env.LEAFMESH_TRANSCRIPT) process.stdout.write(`\n${formatDrillReport(report)}\n${JSON.stringify(report, null, 2)}\n`);

    // The cut: held as planned, restored, nothing left in the kernel, only the upstream's leaf port.
    expect(report.cut.restored).toBe(true);
    expect(report.cut.heldMs).toBeGreaterThanOrEqual(seconds * 1_000);
    expect(report.cut.heldMs).toBeLessThan((seconds + 3) * 1_000);
    expect(report.upstreams).toEqual([{ url: `nats-leaf://${hubAddresses[0]}:7422`, address: hubAddresses[0], port: 7422 }]);
    expect(report.cut.droppedPackets).toBeGreaterThan(0);
    expect(await cutInForce(node)).toBe(false);

    const during = observed.filter((sample) => sample.cut);
    // The observer's rounds (five commands each) take about a second.
    expect(during.length).toBeGreaterThan(seconds / 2);
    // The observer's own DNS and HTTP through the cluster IP never failed during the cut; nor did the drill's checks.
    expect(during.filter((sample) => !sample.web || !sample.http)).toEqual([]);
    expect(report.checks.map((check) => `${check.kind} ${check.target}`).sort()).toEqual(["dns web.demo.svc.cluster.local", "tcp 198.19.0.10:80 (demo/web)"]);
    for (const check of report.checks) {
      expect(check.failed, check.name).toBe(0);
      expect(check.passed).toBeGreaterThanOrEqual(seconds);
    }
    expect(report.totals).toMatchObject({ failed: 0, longestGapMs: 0 });
    // The cut was real: the service added at the hub never reached the node while it held,
    expect(during.some((sample) => sample.late)).toBe(false);
    // and the node's leaf gave up its connection (its pings noticed the silent cut): the hub holds a new one from it now.
    expect(report.leaf.downAfterMs).toBeGreaterThan(0);
    const leafAfter = await hubLeafs();
    expect(leafAfter).toHaveLength(1);
    expect(leafAfter).not.toEqual(leafBefore);
    expect(report.leaf.downAfterMs).toBeLessThan(seconds * 1_000);
    expect(report.leaf.upAfterRestoreMs).toBeDefined();
    // Caught up means it: when the drill said so (before it exited), the new service was answered.
    expect(report.catalog.caughtUp).toBe(true);
    expect(report.catalog.objectsAfter).toBe(report.catalog.objectsBefore + 2);
    expect(await dig("late")).toBe(true);
    const restoredAt = observed.find((sample, index) => index > 0 && !sample.cut && observed[index - 1].cut)?.at;
    const lateSeen = observed.find((sample) => sample.late)?.at ?? exitedAt;
    expect(restoredAt).toBeDefined();
    // The observer saw `late` no later than the drill's exit, within its sampling of the drill's catch-up time.
    expect(lateSeen).toBeLessThanOrEqual(exitedAt);
    expect(Math.abs(lateSeen - restoredAt! - report.catalog.caughtUpMs!)).toBeLessThan(3_000);
  }, 240_000);

  it("restores the link at once when interrupted (Ctrl-C)", async () => {
    await eventually(async () => (await statusIn(node)).status.links.some((link) => link.direction === "upstream" && link.up), 60_000, "the leaf up before the next drill");
    const drill = startDrill(node, ["--seconds", "120", "--json"]);
    await eventually(() => cutInForce(node), 20_000, "the drill's cut");
    drill.child.kill("SIGINT");
    const { code, stdout } = await drill.done;
    expect(code).toBe(130);
    const report = JSON.parse(stdout) as DrillReport;
    expect(report.cut.interrupted).toBeDefined();
    expect(report.cut.restored).toBe(true);
    expect(report.cut.heldMs).toBeLessThan(20_000);
    expect(await cutInForce(node)).toBe(false);
  }, 120_000);

  it("a drill killed outright (SIGKILL) leaves a cut the kernel lifts by itself", async () => {
    const drill = startDrill(node, ["--seconds", "2", "--grace", "3", "--json"]);
    await eventually(() => cutInForce(node), 20_000, "the drill's cut");
    drill.child.kill("SIGKILL");
    await drill.done;
    const elements = async () => (await runCommand(inNamespace(node, ["nft", "list", "set", "inet", "leafmesh_drill", "cut4"]))).stdout;
    expect(await elements()).toContain(`${hubAddresses[0]} . 7422`);
    // The set's element expires 2 + 3 s after the cut was made: the leaf comes back with nobody to restore it.
    await eventually(async () => !(await elements()).includes(hubAddresses[0]), 15_000, "the cut's element to expire");
    await eventually(async () => (await statusIn(node)).status.links.some((link) => link.direction === "upstream" && link.up), 60_000, "the leaf up again");
    await runCommand(inNamespace(node, ["nft", "delete", "table", "inet", "leafmesh_drill"]));
  }, 120_000);
});
