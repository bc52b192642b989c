/**
 * Two nodes whose direct path crosses a path MTU black hole: a 1400-byte link between two
 * routers (a tunnel or PPPoE hop) whose ICMP "fragmentation needed" both routers drop. The
 * TCP handshake, noise, multistream and pings are small and pass; every full-sized segment
 * is lost. Each node reaches the hub on its own side of the black hole (a hub with a leg in
 * both networks), so the relay works.
 *
 *   node-a ── r1 ══(mtu 1400, no ICMP)══ r2 ── node-b
 *              └──────────── hub ────────────┘
 *                                           r2 ── node-c (its hub address is the hub's leg on r1's side)
 *
 * Probed before: the path was "direct" at once and every stream on it failed (SOCKS host
 * unreachable after 10 s), for as long as it ran; the relay was never tried. Now the
 * direct connection must carry an 8 KiB probe first (services/tunnel/path-check.ts): it
 * does not, the path is relayed, and a download and an upload arrive whole (SHA-256 at
 * both ends). The far node does not take the connection the other dialled either.
 *
 * node-c reaches its hub only across the black hole: its leaf link was made every 3 s and
 * went stale 2 s later, said only at debug level, and status showed no link and no reason.
 * Now the agent says what it is and how to fix it (nats/leaf-stale.ts), in its log and in
 * status, and the fix it names (the route's MTU on the node) brings the link up.
 *
 * Root and network namespaces: `flock /tmp/leafmesh-lab.lock npx vitest run test/pmtu-blackhole-lab.test.ts`.
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
const nodes: Record<"a" | "b" | "c", { namespace: string; agent?: LeafmeshProcess }> = { a: { namespace: "" }, b: { namespace: "" }, c: { namespace: "" } };

const pathsOf = async (side: "a" | "b"): Promise<Record<string, string>> => {
  const view = await statusInNamespace<{ status: { actors: { name: string; detail?: { paths?: Record<string, string> } }[] } }>(nodes[side].namespace, { port: 4222, keys, as: { node: `node-${side}` } });
  return view.status.actors.find((actor) => actor.name === "tunnel")?.detail?.paths ?? {};
};

beforeAll(async () => {
  lab = await createLab({ prefix: "lmpm-" });
  const [a, r1, r2, b, hub] = [await lab.namespace("a"), await lab.namespace("r1"), await lab.namespace("r2"), await lab.namespace("b"), await lab.namespace("hub")];
  const c = await lab.namespace("c");
  nodes.a.namespace = a;
  nodes.b.namespace = b;
  nodes.c.namespace = c;
  await lab.veth({ a, b: r1, nameA: "eth0", nameB: "lan", addressA: "198.18.20.2/24", addressB: "198.18.20.1/24" });
  await lab.veth({ a: r1, b: r2, nameA: "core", nameB: "core", addressA: "198.18.21.1/30", addressB: "198.18.21.2/30" });
  await lab.veth({ a: b, b: r2, nameA: "eth0", nameB: "lan", addressA: "198.18.22.2/24", addressB: "198.18.22.1/24" });
  await lab.veth({ a: c, b: r2, nameA: "eth0", nameB: "lanc", addressA: "198.18.25.2/24", addressB: "198.18.25.1/24" });
  await lab.veth({ a: hub, b: r1, nameA: "eth0", nameB: "hub", addressA: "198.18.23.2/24", addressB: "198.18.23.1/24" });
  await lab.veth({ a: hub, b: r2, nameA: "eth1", nameB: "hub", addressA: "198.18.24.2/24", addressB: "198.18.24.1/24" });
  for (const router of [r1, r2]) {
    await lab.exec(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    await lab.exec(router, ["ip", "link", "set", "core", "mtu", "1400"]);
    // The black hole: the router that cannot forward a full-sized packet says so with ICMP, which is dropped.
    await lab.exec(router, ["iptables", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"]);
  }
  await lab.route(a, "default", { via: "198.18.20.1" });
  await lab.route(b, "default", { via: "198.18.22.1" });
  await lab.route(r1, "198.18.22.0/24", { via: "198.18.21.2" });
  await lab.route(r2, "198.18.20.0/24", { via: "198.18.21.1" });
  await lab.route(hub, "198.18.20.0/24", { via: "198.18.23.1" });
  await lab.route(hub, "198.18.22.0/24", { via: "198.18.24.1" });
  // node-c and its hub address meet only across the core.
  await lab.route(c, "default", { via: "198.18.25.1" });
  await lab.route(r1, "198.18.25.0/24", { via: "198.18.21.2" });
  await lab.route(r2, "198.18.23.0/24", { via: "198.18.21.1" });
  await lab.route(hub, "198.18.25.0/24", { via: "198.18.23.1" });
  // The black hole is real: a full-sized ping with DF set gets no answer, a small one does.
  await lab.exec(a, ["ping", "-c1", "-W2", "-s", "100", "-M", "do", "198.18.22.2"]);
  expect((await lab.run(a, ["ping", "-c1", "-W2", "-s", "1450", "-M", "do", "198.18.22.2"])).code).not.toBe(0);

  keys = join(tempDir(), "keys");
  await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", "198.18.23.2", "198.18.24.2"] });
  for (const node of ["node-a", "node-b", "node-c"]) await issueNode({ dir: keys, node });
  launch("hub-1", ["hub", "--name", "hub-1", "--data", tempDir(), "--listen", "0.0.0.0:4222", "--leaf-listen", "0.0.0.0:7422", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--keys", keys], "", "", hub);
  targets = startHashedTargets(b, nodeBinary);
  const agent = (side: "a" | "b" | "c", address: string, hubAddress: string, extra: string[]) =>
    launch(`node-${side}`, [
      "agent", "--node", `node-${side}`, "--hub", `nats://${hubAddress}:7422`, "--data", tempDir(), "--keys", keys,
      "--nats-listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--mdns", "off",
      "--tunnel-listen", `/ip4/${address}/tcp/4101`, "--tunnel-tls", `${address}:4102`, "--tunnel-ways", "direct,relay", ...extra,
    ], "", "", nodes[side].namespace);
  nodes.a.agent = agent("a", "198.18.20.2", "198.18.23.2", ["--socks", "127.0.0.1:1080"]);
  nodes.b.agent = agent("b", "198.18.22.2", "198.18.24.2", []);
  nodes.c.agent = agent("c", "198.18.25.2", "198.18.23.2", []);
  await targets.ready;
}, 120_000);

afterAll(async () => {
  targets?.process.kill("SIGKILL");
  await stopAllProcesses();
  await lab?.teardown();
}, 60_000);

describe("a direct path across a path MTU black hole", () => {
  it("is not taken: the path is relayed, and a download and an upload arrive whole", { timeout: 180_000 }, async () => {
    // Either side may ask first; a stream makes node-a look for a path to node-b.
    const settled = await eventually(
      async () => {
        await hashedTransfer(nodes.a.namespace, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes: 1024, timeoutMs: 15_000 });
        const paths = await pathsOf("a");
        return paths["node-b"] === "relayed" || paths["node-b"] === "direct" ? paths["node-b"] : undefined;
      },
      90_000,
      "node-a's path to node-b to settle",
    );
    expect(settled, `node-a's path to node-b (its log: ${nodes.a.agent!.output().split("\n").filter((line) => line.includes("node-b")).slice(-5).join("\n")})`).toBe("relayed");
    expect(nodes.a.agent!.output()).toContain("does not carry data");

    const bytes = 4 * 1024 * 1024;
    const download = await hashedTransfer(nodes.a.namespace, { nodeBinary, socksPort: 1080, node: "node-b", mode: "download", bytes, timeoutMs: 60_000 });
    expect(download.result).toBe("end");
    expect(download.bytes).toBe(bytes);
    expect(targets.sent.at(-1)?.sha256, "the source's hash").toBe(download.sha256);
    const upload = await hashedTransfer(nodes.a.namespace, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes, timeoutMs: 60_000 });
    expect(upload.result).toBe("end");
    expect(upload.reply, "the sink's hash and count").toBe(`${upload.sha256} ${bytes}`);

    // node-a retries the direct way every 15 s: neither side takes a connection that does not carry data.
    await new Promise((resolve) => setTimeout(resolve, 20_000));
    expect((await pathsOf("a"))["node-b"]).toBe("relayed");
    expect((await pathsOf("b"))["node-a"] ?? "relayed").toBe("relayed");
    const again = await hashedTransfer(nodes.a.namespace, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes: 256 * 1024, timeoutMs: 30_000 });
    expect(again.reply).toBe(`${again.sha256} ${256 * 1024}`);
  });
});

describe("a leaf link across a path MTU black hole", () => {
  interface View {
    status: { links: { direction: string; up: boolean }[]; upstreamProblem?: string };
  }
  const viewOfC = () => statusInNamespace<View>(nodes.c.namespace, { port: 4222, keys, as: { node: "node-c" } });

  it("is said, in the log and in status, with the fix, and the fix it names brings the link up", { timeout: 120_000 }, async () => {
    const view = await eventually(async () => ((await viewOfC()).status.upstreamProblem ? viewOfC() : undefined), 60_000, "node-c's status to say why it has no upstream");
    expect(view.status.links.filter((link) => link.direction === "upstream" && link.up)).toEqual([]);
    expect(view.status.upstreamProblem).toMatch(/went stale within .* path MTU black hole/);
    const said = nodes.c.agent!.output().split("\n").filter((line) => line.includes("went stale within"));
    expect(said.length, "said in the log").toBeGreaterThan(0);
    expect(JSON.parse(said[0]).level, "at error level").toBe(50);
    expect(said.length, "once a minute, not at every link").toBeLessThanOrEqual(2);

    // The fix it names: this node's route with the path's MTU (TCP then sends, and asks for, smaller segments).
    await lab.exec(nodes.c.namespace, ["ip", "route", "change", "default", "via", "198.18.25.1", "mtu", "1400"]);
    const healed = await eventually(async () => {
      const now = await viewOfC();
      return now.status.links.some((link) => link.direction === "upstream" && link.up) ? now : undefined;
    }, 30_000, "node-c's leaf link to come up once its route has the path's MTU");
    expect(healed.status.upstreamProblem).toBeUndefined();
  });
});
