/**
 * Nodes with only IPv6 addresses on their LAN, and a hub reached over IPv6, with the agent's
 * defaults for the tunnel's listeners (no --tunnel-listen, no --tunnel-tls).
 *
 * Probed before: the tunnel listened on /ip4/0.0.0.0 alone, so an IPv6-only node's record held
 * nothing but 127.0.0.1; another node dialled that, reached itself, failed the handshake and
 * was relayed through the hub, while the two nodes sat on one LAN. Now the defaults listen on
 * both families (services/tunnel/listen-family.ts): the path is direct, streams run on direct
 * TLS connections over IPv6, and a download and an upload arrive whole (SHA-256 at both ends).
 *
 * Root and network namespaces: `flock /tmp/leafmesh-lab.lock npx vitest run test/ipv6-lab.test.ts`.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab } from "../lab/netns.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { hashedTransfer, startHashedTargets, type HashedTargets } from "./support/hashed-transfer.ts";
import { eventually } from "./support/ports.ts";
import { launch, nodeBinary, statusInNamespace, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

const addresses = { hub: "fd00:18::1", a: "fd00:18::a", b: "fd00:18::b" };
let lab: Lab;
let keys: string;
let targets: HashedTargets;
const namespaces = { a: "", b: "" };
let agentA: LeafmeshProcess;

interface TunnelDetail {
  paths?: Record<string, string>;
}
const tunnelOf = async (side: "a" | "b"): Promise<TunnelDetail> => {
  const view = await statusInNamespace<{ status: { actors: { name: string; detail?: TunnelDetail }[] } }>(namespaces[side], { port: 4222, keys, as: { node: `node-${side}` } });
  return view.status.actors.find((actor) => actor.name === "tunnel")?.detail ?? {};
};

beforeAll(async () => {
  lab = await createLab({ prefix: "lmv6-" });
  const bridge = await lab.bridge("br");
  const hub = await lab.namespace("hub");
  namespaces.a = await lab.namespace("a");
  namespaces.b = await lab.namespace("b");
  for (const [namespace, address] of [[hub, addresses.hub], [namespaces.a, addresses.a], [namespaces.b, addresses.b]]) {
    await lab.link({ namespace, bridge });
    // nodad: usable at once (no duplicate address detection to wait for); no IPv4 address at all.
    await lab.exec(namespace, ["ip", "-6", "address", "add", `${address}/64`, "dev", "eth0", "nodad"]);
  }
  await eventually(async () => (await lab.run(namespaces.a, ["ping", "-6", "-c1", "-W1", addresses.b])).code === 0, 10_000, "the IPv6 LAN to carry a ping");

  keys = join(tempDir(), "keys");
  await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", addresses.hub] });
  for (const node of ["node-a", "node-b"]) await issueNode({ dir: keys, node });
  launch("hub-1", ["hub", "--name", "hub-1", "--data", tempDir(), "--listen", "[::]:4222", "--leaf-listen", "[::]:7422", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--keys", keys], "", "", hub);
  targets = startHashedTargets(namespaces.b, nodeBinary);
  for (const side of ["a", "b"] as const) {
    const agent = launch(`node-${side}`, [
      "agent", "--node", `node-${side}`, "--hub", `nats://[${addresses.hub}]:7422`, "--data", tempDir(), "--keys", keys,
      "--nats-listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--mdns", "off",
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

describe("nodes with only IPv6 addresses, on the tunnel's default listeners", () => {
  it("reach each other directly, on TLS streams over IPv6, and the bytes arrive whole", { timeout: 120_000 }, async () => {
    await eventually(async () => (await hashedTransfer(namespaces.a, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes: 1024, timeoutMs: 15_000 })).result === "end", 60_000, "a first stream node-a → node-b");
    const path = await eventually(async () => {
      const kind = (await tunnelOf("a")).paths?.["node-b"];
      return kind === "direct" || kind === "relayed" ? kind : undefined;
    }, 30_000, "node-a's path to node-b to settle");
    expect(path, "on one LAN, the path is direct").toBe("direct");

    const bytes = 4 * 1024 * 1024;
    const download = await hashedTransfer(namespaces.a, { nodeBinary, socksPort: 1080, node: "node-b", mode: "download", bytes, timeoutMs: 60_000 });
    expect(download.result).toBe("end");
    expect(download.bytes).toBe(bytes);
    expect(targets.sent.at(-1)?.sha256, "the source's hash").toBe(download.sha256);
    const upload = await hashedTransfer(namespaces.a, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes, timeoutMs: 60_000 });
    expect(upload.reply, "the sink's hash and count").toBe(`${upload.sha256} ${bytes}`);
    // On direct TLS connections: a TLS carrier that cannot reach the peer's port says so and hands its streams to libp2p.
    expect(agentA.output()).not.toContain("TLS stream to a direct peer failed");
  });
});
