/**
 * Two nodes with only IPv6 addresses, told to listen for the tunnel on IPv4 alone
 * (`--tunnel-listen /ip4/0.0.0.0/tcp/4101 --mdns off`): their records then hold nothing but
 * 127.0.0.1:4101, which reaches each node itself. Their streams are relayed through the hub.
 *
 * Probed before: the LAN dialler (lan-dials.ts) also ran for peers learned through the relay
 * (libp2p says "discovered" of every new peer in its store, not only mDNS answers), dialled the
 * peer at 127.0.0.1:4101, reached the node itself, and logged that the neighbour "does not hold
 * this mesh's pre-shared key": a false warning, both nodes held the same key. Now the LAN
 * dialler dials mDNS answers only, and a dial that reaches another peer says so; the mesh-key
 * warning stays for a key that really differs (services/tunnel/lan-dials.test.ts).
 *
 * Root and network namespaces: `flock /tmp/leafmesh-lab.lock npx vitest run test/ipv6-wrong-listen-lab.test.ts`.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab } from "../lab/netns.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { hashedTransfer, startHashedTargets, type HashedTargets } from "./support/hashed-transfer.ts";
import { eventually } from "./support/ports.ts";
import { launch, nodeBinary, statusInNamespace, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

const addresses = { hub: "fd00:19::1", a: "fd00:19::a", b: "fd00:19::b" };
let lab: Lab;
let keys: string;
let targets: HashedTargets;
const namespaces = { a: "", b: "" };
const agents: Partial<Record<"a" | "b", LeafmeshProcess>> = {};

beforeAll(async () => {
  lab = await createLab({ prefix: "lmv6w-" });
  const bridge = await lab.bridge("br");
  const hub = await lab.namespace("hub");
  namespaces.a = await lab.namespace("a");
  namespaces.b = await lab.namespace("b");
  for (const [namespace, address] of [[hub, addresses.hub], [namespaces.a, addresses.a], [namespaces.b, addresses.b]]) {
    await lab.link({ namespace, bridge });
    await lab.exec(namespace, ["ip", "-6", "address", "add", `${address}/64`, "dev", "eth0", "nodad"]);
  }
  await eventually(async () => (await lab.run(namespaces.a, ["ping", "-6", "-c1", "-W1", addresses.b])).code === 0, 10_000, "the IPv6 LAN to carry a ping");
  keys = join(tempDir(), "keys");
  await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", addresses.hub] });
  for (const node of ["node-a", "node-b"]) await issueNode({ dir: keys, node });
  launch("hub-1", ["hub", "--name", "hub-1", "--data", tempDir(), "--listen", "[::]:4222", "--leaf-listen", "[::]:7422", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--keys", keys], "", "", hub);
  targets = startHashedTargets(namespaces.b, nodeBinary);
  for (const side of ["a", "b"] as const) {
    agents[side] = launch(`node-${side}`, [
      "agent", "--node", `node-${side}`, "--hub", `nats://[${addresses.hub}]:7422`, "--data", tempDir(), "--keys", keys,
      "--nats-listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--mdns", "off",
      "--tunnel-listen", "/ip4/0.0.0.0/tcp/4101",
      ...(side === "a" ? ["--socks", "127.0.0.1:1080"] : []),
    ], "", "", namespaces[side]);
  }
  await targets.ready;
}, 120_000);

afterAll(async () => {
  targets?.process.kill("SIGKILL");
  await stopAllProcesses();
  await lab?.teardown();
}, 60_000);

describe("IPv6-only nodes listening on IPv4 alone", () => {
  it("carry streams (relayed) and never blame the mesh key, which both hold", { timeout: 120_000 }, async () => {
    await eventually(async () => (await hashedTransfer(namespaces.a, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes: 1024, timeoutMs: 15_000 })).result === "end", 60_000, "a first stream node-a → node-b");
    const upload = await hashedTransfer(namespaces.a, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes: 256 * 1024, timeoutMs: 30_000 });
    expect(upload.reply).toBe(`${upload.sha256} ${256 * 1024}`);
    const view = await statusInNamespace<{ status: { actors: { name: string; detail?: { paths?: Record<string, string> } }[] } }>(namespaces.a, { port: 4222, keys, as: { node: "node-a" } });
    expect(view.status.actors.find((actor) => actor.name === "tunnel")?.detail?.paths?.["node-b"]).toBe("relayed");
    // Why not direct, said as it is: the record's one address reached the node itself.
    await eventually(() => /direct: no listen address answered \(1 tried\): \/ip4\/127\.0\.0\.1\/tcp\/4101 reached this node itself/.test(agents.a!.output()), 10_000, "node-a's reason for relaying");
    // Long enough for any dial that followed identify on the relayed connection (3 s each) to end.
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    for (const side of ["a", "b"] as const) expect(agents[side]!.output(), `node-${side}'s log`).not.toMatch(/pre-shared key|failed the encrypted handshake/);
  });
});
