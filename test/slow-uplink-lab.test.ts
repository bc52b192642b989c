/**
 * A node behind a 1 Mbit/s uplink with a deep buffer (a token bucket that holds 3 s of
 * packets: bufferbloat), relaying an upload to another node through the hub. Its downlink
 * is not limited (asymmetric, as DSL and LTE are).
 *
 *   node-a ── r1 ══(1 Mbit/s up, 3 s of buffer)══ r2 ── node-b
 *                                                  └── hub
 *
 * Probed before: a relay channel started with 4 MiB of credit, 33 s of frames at 1 Mbit/s,
 * all handed to node-a's leaf connection at once and queued ahead of every libp2p ping, NATS
 * PING and relay accept on it; ~13 s in, the relayed path's pings timed out, the upload was
 * reset (ECONNRESET) and the next stream found node-b "unreachable"; in another run node-a's
 * leaf link dropped and frames were lost (sequence gap). Now a channel starts at 256 KiB and
 * grows only with what its reader takes (services/tunnel/relay-window.ts): the upload
 * arrives whole (SHA-256 at both ends) and the path and the leaf link stay up.
 *
 * Root and network namespaces: `flock /tmp/leafmesh-lab.lock npx vitest run test/slow-uplink-lab.test.ts`.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab } from "../lab/netns.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { hashedTransfer, startHashedTargets, type HashedTargets } from "./support/hashed-transfer.ts";
import { eventually } from "./support/ports.ts";
import { launch, nodeBinary, statusInNamespace, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

let lab: Lab;
let keys: string;
let targets: HashedTargets;
let agentA: LeafmeshProcess;
const namespaces = { a: "", b: "" };

const pathToB = async (): Promise<string | undefined> => {
  const view = await statusInNamespace<{ status: { actors: { name: string; detail?: { paths?: Record<string, string> } }[] } }>(namespaces.a, { port: 4222, keys, as: { node: "node-a" } });
  return view.status.actors.find((actor) => actor.name === "tunnel")?.detail?.paths?.["node-b"];
};

beforeAll(async () => {
  lab = await createLab({ prefix: "lmup-" });
  const [a, r1, r2, b, hub] = [await lab.namespace("a"), await lab.namespace("r1"), await lab.namespace("r2"), await lab.namespace("b"), await lab.namespace("hub")];
  namespaces.a = a;
  namespaces.b = b;
  await lab.veth({ a, b: r1, nameA: "eth0", nameB: "lan", addressA: "198.18.30.2/24", addressB: "198.18.30.1/24" });
  await lab.veth({ a: r1, b: r2, nameA: "wan", nameB: "wan", addressA: "198.18.31.1/30", addressB: "198.18.31.2/30" });
  await lab.veth({ a: b, b: r2, nameA: "eth0", nameB: "lanb", addressA: "198.18.32.2/24", addressB: "198.18.32.1/24" });
  await lab.veth({ a: hub, b: r2, nameA: "eth0", nameB: "hub", addressA: "198.18.33.2/24", addressB: "198.18.33.1/24" });
  for (const router of [r1, r2]) await lab.exec(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  // The uplink: node-a's side towards the hub, 1 Mbit/s, a queue of up to 3 s before the bucket drops.
  await lab.exec(r1, ["tc", "qdisc", "add", "dev", "wan", "root", "tbf", "rate", "1mbit", "burst", "16kb", "latency", "3s"]);
  await lab.route(a, "default", { via: "198.18.30.1" });
  await lab.route(r1, "default", { via: "198.18.31.2" });
  await lab.route(r2, "198.18.30.0/24", { via: "198.18.31.1" });
  await lab.route(b, "default", { via: "198.18.32.1" });
  await lab.route(hub, "default", { via: "198.18.33.1" });

  keys = join(tempDir(), "keys");
  await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", "198.18.33.2"] });
  for (const node of ["node-a", "node-b"]) await issueNode({ dir: keys, node });
  launch("hub-1", ["hub", "--name", "hub-1", "--data", tempDir(), "--listen", "0.0.0.0:4222", "--leaf-listen", "0.0.0.0:7422", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--keys", keys], "", "", hub);
  targets = startHashedTargets(b, nodeBinary);
  for (const side of ["a", "b"] as const) {
    const agent = launch(`node-${side}`, [
      "agent", "--node", `node-${side}`, "--hub", "nats://198.18.33.2:7422", "--data", tempDir(), "--keys", keys,
      "--nats-listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--mdns", "off", "--tunnel-ways", "relay",
      ...(side === "a" ? ["--socks", "127.0.0.1:1080"] : []),
    ], "", "", namespaces[side]);
    if (side === "a") agentA = agent;
  }
  await targets.ready;
}, 120_000);

afterAll(async () => {
  targets?.process.kill("SIGKILL");
  await stopAllProcesses();
  await lab?.teardown();
}, 60_000);

describe("a relayed upload behind a 1 Mbit/s uplink with a deep buffer", () => {
  it("arrives whole, and the relayed path and the node's leaf link stay up through it", { timeout: 180_000 }, async () => {
    await eventually(async () => (await hashedTransfer(namespaces.a, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes: 1024, timeoutMs: 15_000 })).result === "end", 60_000, "a first relayed stream node-a → node-b");
    expect(await pathToB()).toBe("relayed");
    const logBefore = agentA.output().length;

    // 3 MiB: ~25 s at 1 Mbit/s.
    const bytes = 3 * 1024 * 1024;
    const upload = await hashedTransfer(namespaces.a, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes, timeoutMs: 120_000 });
    expect(upload.result, `the upload (node-a's log meanwhile: ${agentA.output().slice(logBefore).split("\n").filter((line) => /path changed|leaf link|reset/.test(line)).join("\n")})`).toBe("end");
    expect(upload.reply, "the sink's hash and count").toBe(`${upload.sha256} ${bytes}`);
    const during = agentA.output().slice(logBefore);
    expect(during, "node-a's leaf link").not.toContain("leaf link down");
    expect(during, "node-a's path to node-b").not.toContain("path changed");
    expect(await pathToB()).toBe("relayed");
  });
});
