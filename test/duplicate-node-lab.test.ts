/**
 * One node's bundle on two machines of one LAN (a copy too many, or one node started twice): the two agents
 * find each other by mDNS, and each proves the other's name is its own. The agent made a path to its own name
 * and died of it (PathTable.why threw "'edge-a' is this node itself" from a microtask). Now each says, once,
 * that another process runs as this node, closes that peer's connections, and runs on.
 * Namespaces: a hub and two hosts on one bridge (root; under the lab lock).
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab } from "../lab/netns.ts";
import { launch, runCliOk as cli, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";
import { eventually } from "./support/ports.ts";
import { requireTools } from "./support/trust-servers.ts";

const root = process.getuid?.() === 0;
let lab: Lab;
let twins: LeafmeshProcess[] = [];

beforeAll(async () => {
  if (!root) return;
  requireTools();
  lab = await createLab({ prefix: "lmdup-" });
  const bridge = await lab.bridge("br");
  const cloud = await lab.namespace("cloud");
  const hosts = [await lab.namespace("a"), await lab.namespace("b")];
  await lab.link({ namespace: cloud, bridge, address: "198.18.241.10/24" });
  for (const [index, host] of hosts.entries()) {
    await lab.link({ namespace: host, bridge, address: `198.18.241.${21 + index}/24` });
    await lab.route(host, "224.0.0.0/4", { device: "eth0" }); // mDNS: a LAN without a default route
  }
  const keys = join(tempDir("leafmesh-duplicate-"), "keys");
  await cli("keys", "init", "--dir", keys, "--hub-hosts", "198.18.241.10");
  await cli("keys", "issue", "--dir", keys, "--node", "edge-a");
  launch("hub-1", ["hub", "--name", "hub-1", "--keys", keys, "--data", tempDir(), "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off"], "", "", cloud);
  twins = hosts.map((host, index) =>
    launch(`edge-a-${index}`, ["agent", "--node", "edge-a", "--keys", join(keys, "nodes", "edge-a"), "--hub", "tls://198.18.241.10:7422", "--data", tempDir(), "--metrics-listen", "off"], "", "", host),
  );
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
  await lab?.teardown();
}, 60_000);

describe("one node's bundle on two machines of a LAN", () => {
  it("is said by each agent, which runs on", { timeout: 120_000 }, async () => {
    if (!root) throw new Error("this test builds network namespaces: run it as root (CI does), under flock /tmp/leafmesh-lab.lock");
    const said = (twin: LeafmeshProcess) => twin.output().includes("another process runs as node 'edge-a'");
    await eventually(() => twins.some(said) || twins.some((twin) => twin.child.exitCode !== null), 60_000, "an agent to meet its twin").catch((error: Error) => {
      throw new Error(`${error.message}\n${twins.map((twin) => twin.output().slice(-2000)).join("\n----\n")}`);
    });
    // Whatever the twins do next (meet again, publish records over each other), neither ends.
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    for (const twin of twins) expect(twin.child.exitCode, twin.output().slice(-3000)).toBeNull();
    expect(twins.some(said)).toBe(true);
  });
});
