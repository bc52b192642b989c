/**
 * Hole punching between two IPv6 nodes, each on a LAN whose router forwards IPv6 without NAT
 * but drops what it did not see go out (ip6tables `ct state established,related accept; drop`:
 * the IPv6 equivalent of a NAT for punching), with a hub and its NAT observer on the WAN side.
 *
 * Probed before: the observer saw each node's own address and the node called itself "none"
 * (public), so its peer dialled it and the firewall dropped the SYN; a punched socket was turned
 * into an "/ip4/<IPv6 address>" multiaddr (connections.ts), which threw; the hub's
 * `--observer` could not be given IPv6 addresses at all. Now a firewalled own address is
 * classified by its filtering (port-restricted here), the two punch by simultaneous open, the
 * connection holds "/ip6/…", and a transfer both ways arrives whole.
 *
 * Then the far agent freezes (SIGSTOP) under a download on a punched TLS connection: its kernel
 * still acknowledges and answers keepalive, and the download hung for ever; the liveness check
 * (services/tunnel/peer-liveness.ts) now resets it with an error within its bound.
 *
 * Root and network namespaces: `flock /tmp/leafmesh-lab.lock npx vitest run test/ipv6-punch-lab.test.ts`.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab } from "../lab/netns.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { hashedTransfer, startHashedTargets, type HashedTargets } from "./support/hashed-transfer.ts";
import { eventually } from "./support/ports.ts";
import { launch, nodeBinary, statusInNamespace, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";
import { livenessIntervalMs, livenessMisses } from "../services/tunnel/peer-liveness.ts";

const wan = { hub: "fd00:66::1", observer2: "fd00:66::2", r1: "fd00:66::11", r2: "fd00:66::12" };
const lans = { a: { prefix: "fd00:61::", router: "fd00:61::1", host: "fd00:61::10" }, b: { prefix: "fd00:62::", router: "fd00:62::1", host: "fd00:62::10" } };
let lab: Lab;
let keys: string;
let targets: HashedTargets;
const namespaces = { a: "", b: "" };
const agents: Partial<Record<"a" | "b", LeafmeshProcess>> = {};

interface TunnelDetail {
  nat?: string;
  paths?: Record<string, string>;
}
const tunnelOf = async (side: "a" | "b"): Promise<TunnelDetail> => {
  const view = await statusInNamespace<{ status: { actors: { name: string; detail?: TunnelDetail }[] } }>(namespaces[side], { port: 4222, keys, as: { node: `node-${side}` } });
  return view.status.actors.find((actor) => actor.name === "tunnel")?.detail ?? {};
};

beforeAll(async () => {
  lab = await createLab({ prefix: "lmv6p-" });
  const wanBridge = await lab.bridge("wan");
  const hub = await lab.namespace("hub");
  await lab.link({ namespace: hub, bridge: wanBridge });
  for (const address of [wan.hub, wan.observer2]) await lab.exec(hub, ["ip", "-6", "address", "add", `${address}/64`, "dev", "eth0", "nodad"]);
  for (const side of ["a", "b"] as const) {
    const lan = lans[side];
    const router = await lab.namespace(`r${side}`);
    const host = await lab.namespace(side);
    namespaces[side] = host;
    const lanBridge = await lab.bridge(`lan${side}`);
    await lab.link({ namespace: router, bridge: wanBridge, name: "wan0" });
    await lab.link({ namespace: router, bridge: lanBridge, name: "lan0" });
    await lab.link({ namespace: host, bridge: lanBridge });
    const routerWan = side === "a" ? wan.r1 : wan.r2;
    await lab.exec(router, ["ip", "-6", "address", "add", `${routerWan}/64`, "dev", "wan0", "nodad"]);
    await lab.exec(router, ["ip", "-6", "address", "add", `${lan.router}/64`, "dev", "lan0", "nodad"]);
    await lab.exec(host, ["ip", "-6", "address", "add", `${lan.host}/64`, "dev", "eth0", "nodad"]);
    await lab.exec(host, ["ip", "-6", "route", "add", "default", "via", lan.router]);
    await lab.exec(router, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    await lab.exec(hub, ["ip", "-6", "route", "add", `${lan.prefix}/64`, "via", routerWan]);
    const other = side === "a" ? lans.b : lans.a;
    await lab.exec(router, ["ip", "-6", "route", "add", `${other.prefix}/64`, "via", side === "a" ? wan.r2 : wan.r1]);
    // The stateful firewall: in from the WAN only what belongs to a connection seen going out.
    await lab.exec(router, ["ip6tables", "-A", "FORWARD", "-i", "wan0", "-o", "lan0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]);
    await lab.exec(router, ["ip6tables", "-A", "FORWARD", "-i", "wan0", "-o", "lan0", "-j", "DROP"]);
  }
  await eventually(async () => (await lab.run(namespaces.a, ["ping", "-6", "-c1", "-W1", wan.hub])).code === 0, 10_000, "node a to reach the hub over IPv6");
  // Unsolicited from b's side: dropped at a's router (the firewall works).
  expect((await lab.run(namespaces.b, ["ping", "-6", "-c1", "-W1", lans.a.host])).code).not.toBe(0);

  keys = join(tempDir(), "keys");
  await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", wan.hub] });
  for (const node of ["node-a", "node-b"]) await issueNode({ dir: keys, node });
  launch("hub-1", [
    "hub", "--name", "hub-1", "--data", tempDir(), "--listen", "[::]:4222", "--leaf-listen", "[::]:7422", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--keys", keys,
    "--observer", `[${wan.hub}],[${wan.observer2}]:3478,3479`,
  ], "", "", hub);
  targets = startHashedTargets(namespaces.b, nodeBinary);
  for (const side of ["a", "b"] as const) {
    agents[side] = launch(`node-${side}`, [
      "agent", "--node", `node-${side}`, "--hub", `nats://[${wan.hub}]:7422`, "--data", tempDir(), "--keys", keys,
      "--nats-listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--mdns", "off",
      "--observer", `[${wan.hub}]:3478,3479`,
      ...(side === "a" ? ["--socks", "127.0.0.1:1080"] : []),
    ], "", "", namespaces[side]);
  }
  await targets.ready;
}, 120_000);

afterAll(async () => {
  agents.b?.child.kill("SIGCONT");
  targets?.process.kill("SIGKILL");
  await stopAllProcesses();
  await lab?.teardown();
}, 60_000);

describe("IPv6 nodes behind stateful firewalls", () => {
  it("measure their filtering, punch through both firewalls at /ip6 addresses, and carry bytes whole", { timeout: 150_000 }, async () => {
    for (const side of ["a", "b"] as const) {
      const nat = await eventually(async () => {
        const detail = await tunnelOf(side).catch(() => ({}) as TunnelDetail);
        return detail.nat && detail.nat !== "unknown" ? detail.nat : undefined;
      }, 40_000, `node-${side}'s NAT detection`);
      expect(nat, `node-${side}: its own address, filtered by its router`).toBe("port-restricted");
    }
    await eventually(async () => (await hashedTransfer(namespaces.a, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes: 1024, timeoutMs: 15_000 })).result === "end", 60_000, "a first stream node-a → node-b");
    const path = await eventually(async () => {
      const kind = (await tunnelOf("a")).paths?.["node-b"];
      return kind === "hole-punched" ? kind : undefined;
    }, 60_000, "node-a's path to node-b to be hole-punched").catch(async () => (await tunnelOf("a")).paths?.["node-b"]);
    expect(path, `node-a's path; its log: ${agents.a!.output().split("\n").filter((line) => /punch|path/.test(line)).slice(-8).join("\n")}`).toBe("hole-punched");

    const bytes = 4 * 1024 * 1024;
    const download = await hashedTransfer(namespaces.a, { nodeBinary, socksPort: 1080, node: "node-b", mode: "download", bytes, timeoutMs: 60_000 });
    expect(download.result).toBe("end");
    expect(targets.sent.at(-1)?.sha256, "the source's hash").toBe(download.sha256);
    const upload = await hashedTransfer(namespaces.a, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes, timeoutMs: 60_000 });
    expect(upload.reply, "the sink's hash and count").toBe(`${upload.sha256} ${bytes}`);
    for (const side of ["a", "b"] as const) expect(agents[side]!.output()).not.toMatch(/Invalid IPv4 address/);
  });

  it("ends a punched TLS stream in an error when the far agent freezes (its kernel still answers), within the liveness bound", { timeout: 120_000 }, async () => {
    expect((await tunnelOf("a")).paths?.["node-b"]).toBe("hole-punched");
    const boundMs = livenessIntervalMs * (livenessMisses + 1) + 10_000;
    // A download far longer than the test: it ends only by the freeze.
    const download = hashedTransfer(namespaces.a, { nodeBinary, socksPort: 1080, node: "node-b", mode: "download", bytes: 64 * 1024 * 1024 * 1024, timeoutMs: boundMs + 5_000 });
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    agents.b!.child.kill("SIGSTOP");
    try {
      const result = await download;
      expect(`${result.result} ${result.code ?? ""}`.trim(), "the download's client").toBe("error ECONNRESET");
      // Logged before the reset, but read here through a pipe that may bring it after. Said by the liveness watch
      // (peer-liveness.ts), or sooner when node-b's agent had connected again just before the freeze: a new
      // connection of the same kind makes node-a ping the old one, which a frozen agent does not answer
      // (connections.ts's abortUnanswering; seen once in a loaded full run, 2026-12-07).
      await eventually(() => expect(agents.a!.output()).toMatch(/stopped answering on the hole-punched path|a hole-punched connection did not answer after node-b connected again/), 10_000);
    } finally {
      agents.b!.child.kill("SIGCONT");
    }
  });
});
