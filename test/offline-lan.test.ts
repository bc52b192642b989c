/**
 * The LAN without the hub (issue 15, item 11), with real agent processes:
 *
 * - two agents started while their hub is unreachable find each other by mDNS,
 *   and the SOCKS proxy takes a LAN peer's bare name as a node name (`edge-b`,
 *   not only `edge-b.node`), as it does online from node records; status lists it;
 * - a secured agent cut off from its hub logs no permission error for its own
 *   housekeeping (the node directory's consumer delete, "Publish Violation" at
 *   error level every few seconds of the cut).
 *
 * mDNS runs on this machine's own network, as an agent's would on a LAN.
 */
import { connect, type Server } from "node:net";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { buckets } from "../bus/subjects.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { socksGreeting, socksRequest } from "./support/fault-targets.ts";
import { writePsk } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "./support/processes.ts";
import { startTcpEcho } from "./support/tunnel-fabric.ts";

afterEach(stopAllProcesses);

/** A SOCKS5 CONNECT to `host:port` through the proxy, one line sent and read back: the echoed line, or why not. */
function socksEcho(socksPort: number, host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port: socksPort });
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => finish(`no answer (${received.toString("hex")})`), 10_000);
    function finish(result: string) {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    }
    socket.on("connect", () => socket.write(Buffer.concat([socksGreeting, socksRequest(host, port)])));
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length === 12) {
        if (received[3] !== 0x00) return finish(`refused with reply ${received[3]}`);
        socket.write("hello\n");
      }
      if (received.length >= 12 + 6) finish(received.subarray(12).toString());
    });
    socket.on("error", (error) => finish(error.message));
  });
}

describe("the LAN without the hub", () => {
  let echo: Server;
  afterAll(() => echo?.close());

  it("takes a LAN peer found by mDNS as a node name in the SOCKS proxy, and lists it in status", async () => {
    const started = await startTcpEcho();
    echo = started.server;
    const echoPort = started.port;
    const psk = writePsk(tempDir());
    const unreachableHub = `nats://127.0.0.1:${await freePort()}`;
    const socksPort = await freePort();
    const tunnelArgs = ["--psk", psk, "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "on"];
    const [edgeA] = await Promise.all([
      startAgentProcess({ node: "edge-a", hubs: [unreachableHub], extraArgs: [...tunnelArgs, "--socks", `127.0.0.1:${socksPort}`] }),
      startAgentProcess({ node: "edge-b", hubs: [unreachableHub], extraArgs: tunnelArgs }),
    ]);
    // Found by mDNS (there is no other way without the hub): the explicit form works first.
    expect(await eventually(async () => ((await socksEcho(socksPort, "edge-b.node", echoPort)) === "hello\n" ? "hello\n" : undefined), 30_000, "edge-b.node through the tunnel")).toBe("hello\n");
    // The bare name, as online.
    expect(await socksEcho(socksPort, "edge-b", echoPort)).toBe("hello\n");
    const tunnel = (await edgeA.view()).status.actors.find((actor) => actor.name === "tunnel");
    expect((tunnel?.detail as { peers: { node: string; path: string }[] }).peers).toEqual([expect.objectContaining({ node: "edge-b", path: "direct" })]);
  }, 90_000);

  it("logs no permission error for its own housekeeping when cut off from its hub", async () => {
    const keys = join(tempDir(), "keys");
    await initKeys({ dir: keys });
    await issueNode({ dir: keys, node: "edge-a" });
    const hub = await startHubProcess({ name: "hub-1", keys });
    const agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], keys, extraArgs: ["--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "off", "--mdns", "off"] });
    // The node directory publishes its record, then watches mesh-nodes (an ordered consumer in the hub's domain).
    const nodes = await new Kvm(await hub.connection()).open(buckets.nodes);
    await eventually(async () => (await nodes.get("edge-a"))?.operation === "PUT", 30_000, "edge-a's record at the hub");
    // What the directory's consumer sends when it resets, seen on the agent's own server.
    const local = await agent.connection();
    let deletes = 0;
    local.subscribe(`$JS.*.API.CONSUMER.DELETE.KV_${buckets.nodes}.>`, { callback: () => void deletes++ });
    await local.flush();
    await hub.kill();
    // Heartbeats stop with the hub; after two missed (30 s each) nats.js resets the consumer, deleting the old one first.
    const refused = /Publish Violation|denied: node/;
    await eventually(() => deletes > 0 || refused.test(agent.output()), 120_000, "the directory's consumer to be reset");
    expect(agent.output().split("\n").filter((line) => refused.test(line))).toEqual([]);
    expect(deletes).toBeGreaterThan(0);
  }, 180_000);
});
