/**
 * internalTrafficPolicy: Local where the endpoint lives. edge-b runs the agent's tunnel as
 * roles/agent-actors.ts builds it, over its catalog; edge-a is a tunnel with the mesh's key that
 * asks edge-b for targets itself, as an agent that ignores the policy (leafmesh before
 * 2026-12-06) or anyone holding the key does. The pod 127.0.0.3 on edge-b backs a Local
 * Service on one port (TCP and UDP) and a Cluster Service on another: only the latter is
 * served, also when the Local one is asked for by a name that resolves to it (refused with its code, UDP
 * too: a UDP name is resolved and checked before the stream's status); a Cluster Service
 * added on the Local one's port opens it, and removing it closes it again. An opener whose
 * catalog has the Service as Cluster says why its client was refused.
 * Before, edge-b served every one of them.
 */
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../bus/bus.ts";
import { IndexFeed } from "../bus/catalog-feed.ts";
import { catalogKey, type CatalogObject } from "../bus/catalog.ts";
import { DatagramDecoder, encodeDatagram, localTrafficPolicyCode } from "../bus/streams.ts";
import { Registry } from "../lib/prom.ts";
import { silentLogger } from "../lib/log.ts";
import { agentActors } from "../roles/agent-actors.ts";
import type { StartedActor } from "../roles/agent.ts";
import { normalizeObject } from "../services/controller/normalize.ts";
import { createTunnelActor, type TunnelActor } from "../services/tunnel/index.ts";
import { createTrafficActor } from "../services/traffic/index.ts";
import { localOnlyRefusal } from "../services/traffic/endpoint-connect.ts";
import { localOnlyReason } from "../services/tunnel/stream-server.ts";
import { TargetRefusedError } from "../services/tunnel/stream-header.ts";
import { capturedLog } from "./support/log-lines.ts";
import { eventually, freePort } from "./support/ports.ts";
import { listenerAddress, whoAnswers } from "./support/traffic-catalog.ts";
import { roundTrip, startFabric, testPsk, type TestFabric } from "./support/tunnel-fabric.ts";

const pod = "127.0.0.3"; // on edge-b

function normalised(raw: object): CatalogObject {
  const result = normalizeObject(raw);
  if (result.status !== "ok") throw new Error(`not normalised: ${JSON.stringify(result)}`);
  return result.object;
}

/** A Service and its slice: one endpoint, the pod on edge-b. */
function service(name: string, clusterIP: string, policy: "Local" | "Cluster", ports: { name: string; port: number; protocol: "TCP" | "UDP" }[]): CatalogObject[] {
  return [
    normalised({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace: "lab" },
      spec: { clusterIP, internalTrafficPolicy: policy, ports: ports.map((port) => ({ name: port.name, port: 80, targetPort: port.port, protocol: port.protocol })) },
    }),
    normalised({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: `${name}-1`, namespace: "lab", labels: { "kubernetes.io/service-name": name } },
      addressType: "IPv4",
      endpoints: [{ addresses: [pod], nodeName: "edge-b", conditions: { ready: true } }],
      ports,
    }),
  ];
}

describe("internalTrafficPolicy Local at the endpoint's node", () => {
  let fabric: TestFabric;
  const feed = new IndexFeed();
  const servers: Server[] = [];
  let udp: UdpSocket;
  let edgeA: TunnelActor;
  let edgeB: StartedActor;
  const served = { local: 0, cluster: 0 };
  let udpServed = 0;
  const logged = capturedLog();
  let localPort = 0;
  let clusterPort = 0;

  const put = (objects: CatalogObject[], op: "put" | "delete" = "put") =>
    feed.notify(objects.map((object) => catalogKey(object)).filter((key, index) => feed.reader.apply(op === "put" ? { op, key, object: objects[index] } : { op, key })));

  beforeAll(async () => {
    localPort = await freePort();
    clusterPort = await freePort();
    for (const [port, which] of [[localPort, "local"], [clusterPort, "cluster"]] as const) {
      const server = createServer((socket) => {
        served[which]++;
        socket.on("error", () => undefined).pipe(socket);
      });
      await new Promise<void>((resolve) => server.listen(port, pod, resolve));
      servers.push(server);
    }
    udp = createSocket("udp4").on("message", (message, from) => {
      udpServed++;
      udp.send(message, from.port, from.address);
    });
    await new Promise<void>((resolve) => udp.bind(localPort, pod, resolve));
    put(service("node-agent", "198.19.0.60", "Local", [{ name: "main", port: localPort, protocol: "TCP" }, { name: "statsd", port: localPort, protocol: "UDP" }]));
    put(service("metrics", "198.19.0.61", "Cluster", [{ name: "metrics", port: clusterPort, protocol: "TCP" }]));

    fabric = await startFabric({ hubs: 1, leaves: ["edge-a", "edge-b"] });
    // Both leaves linked to the hub before edge-b starts: its first node record then lands at once (a failed put waits 5 s to retry).
    const hubMonitor = fabric.hubs[0].server.options.monitor;
    await eventually(async () => ((await (await fetch(`http://127.0.0.1:${hubMonitor.port}/leafz`)).json()) as { leafnodes: number }).leafnodes === 2, 10_000, "both leaves linked to the hub");
    const connectionB = await fabric.connect("edge-b");
    // The agent's own tunnel factory (proxier, tunnel, traffic with no DNS): the wiring under test.
    const [, tunnelFactory] = agentActors({ proxyHost: "127.0.0.1", intercept: "off", clusterDomain: "cluster.local", tunnel: { psk: testPsk, listen: ["/ip4/127.0.0.1/tcp/0"], mdns: false } });
    edgeB = await tunnelFactory({
      node: "edge-b",
      bus: new Bus({ connection: connectionB, node: "edge-b", log: silentLogger() }),
      connection: connectionB,
      log: logged.log,
      registry: new Registry(),
      feed,
      upstream: { reach: "cloud", onChange: () => () => undefined },
    });
    expect(edgeB.name).toBe("tunnel");
    const connectionA = await fabric.connect("edge-a");
    edgeA = createTunnelActor({ bus: new Bus({ connection: connectionA, node: "edge-a", log: silentLogger() }), log: silentLogger(), node: "edge-a", nats: connectionA, listen: ["/ip4/127.0.0.1/tcp/0"], psk: testPsk, mdns: false, recordRefreshMs: 500 });
    await edgeA.start();
    await eventually(() => edgeA.directory?.get("edge-b"), 15_000, "edge-b's record");
  }, 60_000);

  afterAll(async () => {
    await edgeA?.stop();
    await edgeB?.stop();
    await fabric?.stop();
    udp?.close();
    for (const server of servers) await new Promise((resolve) => server.close(resolve));
  });

  const refusal = (host: string, port: number, protocol: "TCP" | "UDP") =>
    edgeA.openStream("edge-b", { host, port, protocol }).then(
      (stream) => (stream.destroy(), undefined),
      (error: unknown) => error,
    );

  it("refuses another node's stream to an endpoint only Local Services lead to, and serves the Cluster Service on the same pod", async () => {
    const echoed = await roundTrip(await edgeA.openStream("edge-b", { host: pod, port: clusterPort, protocol: "TCP" }), Buffer.from("metrics"));
    expect(echoed.toString()).toBe("metrics");

    const refused = await refusal(pod, localPort, "TCP");
    expect(refused).toBeInstanceOf(TargetRefusedError);
    expect((refused as TargetRefusedError).targetCode).toBe(localTrafficPolicyCode);
    expect((refused as Error).message).toBe(
      `edge-b refuses the stream: ${pod}:${localPort}/TCP is an endpoint only of Services whose internalTrafficPolicy is Local (lab/node-agent): it is served to clients on its own node only`,
    );
    // UDP, and a name that resolves to the pod (getaddrinfo reads 127.3 as 127.0.0.3): refused as well, with the
    // code (a UDP name was resolved after the stream's "ok" and cut: the opener saw a cut, not the refusal).
    expect(((await refusal(pod, localPort, "UDP")) as TargetRefusedError | undefined)?.targetCode).toBe(localTrafficPolicyCode);
    expect(((await refusal("127.3", localPort, "TCP")) as TargetRefusedError | undefined)?.targetCode).toBe(localTrafficPolicyCode);
    expect(((await refusal("127.3", localPort, "UDP")) as TargetRefusedError | undefined)?.targetCode).toBe(localTrafficPolicyCode);
    expect(served.local).toBe(0);
    expect(udpServed).toBe(0);
    // Counted in the tunnel's status, and logged once with the reason.
    expect((edgeB.detail!().refused as Record<string, number>)[localOnlyReason]).toBe(4);
    expect(logged.lines.filter((line) => String(line.msg).startsWith("tunnel stream refused") && line.reason === localOnlyReason)).toHaveLength(1);
  }, 30_000);

  it("serves it while a Cluster Service also leads to that pod port, and refuses it again once that Service is gone", async () => {
    const alsoCluster = service("node-agent-all", "198.19.0.62", "Cluster", [{ name: "main", port: localPort, protocol: "TCP" }, { name: "statsd", port: localPort, protocol: "UDP" }]);
    put(alsoCluster);
    const echoed = await roundTrip(await edgeA.openStream("edge-b", { host: pod, port: localPort, protocol: "TCP" }), Buffer.from("agent"));
    expect(echoed.toString()).toBe("agent");
    expect(served.local).toBe(1);
    // A UDP target by name, resolved before its status: its datagrams go to the address it resolved to.
    const datagrams = await edgeA.openStream("edge-b", { host: "127.3", port: localPort, protocol: "UDP" });
    const answer = new Promise<Buffer>((resolve) => datagrams.on("data", (chunk: Buffer) => resolve(new DatagramDecoder().push(chunk)[0])));
    datagrams.write(encodeDatagram(Buffer.from("gauge:1|g")));
    expect((await answer).toString()).toBe("gauge:1|g");
    datagrams.destroy();
    expect(udpServed).toBe(1);
    put(alsoCluster, "delete");
    expect(((await refusal(pod, localPort, "TCP")) as TargetRefusedError | undefined)?.targetCode).toBe(localTrafficPolicyCode);
    expect(((await refusal("127.3", localPort, "UDP")) as TargetRefusedError | undefined)?.targetCode).toBe(localTrafficPolicyCode);
    expect(served.local).toBe(1);
    expect(udpServed).toBe(1);
  }, 30_000);

  it("is said by an opener whose catalog still has the Service as Cluster: counted and logged with the reason", async () => {
    const staleFeed = new IndexFeed();
    const stale = service("node-agent", "198.19.0.60", "Cluster", [{ name: "main", port: localPort, protocol: "TCP" }, { name: "statsd", port: localPort, protocol: "UDP" }]);
    staleFeed.notify(stale.map((object) => catalogKey(object)).filter((key, index) => staleFeed.reader.apply({ op: "put", key, object: stale[index] })));
    const opener = capturedLog();
    const traffic = createTrafficActor({ feed: staleFeed, log: opener.log, node: "edge-a", listenHost: "127.0.0.1", dialer: edgeA });
    await traffic.start();
    try {
      const listener = await eventually(() => listenerAddress(traffic.listeners().find((binding) => binding.key === "lab/node-agent:main/TCP")), 5_000, "the listener");
      // Its only endpoint refused: the client is reset, and the reason is in the opener's counters and log.
      expect(await whoAnswers(listener)).toBe("ECONNRESET");
      expect(traffic.stats().counters[`tcp connect failed: ${localOnlyRefusal}`]).toBe(1);
      await eventually(() => opener.lines.find((line) => line.reason === `tcp connect failed: ${localOnlyRefusal}` && String(line.err).includes("lab/node-agent")), 5_000, "the opener's log line");
      expect(served.local).toBe(1);
      // A UDP flow to it: refused as well, and counted with the same reason (it counted only "udp tunnel open failed").
      const udpListener = await eventually(() => listenerAddress(traffic.listeners().find((binding) => binding.key === "lab/node-agent:statsd/UDP")), 5_000, "the UDP listener");
      const client = createSocket("udp4");
      try {
        const before = udpServed;
        client.send("hello", udpListener.port, udpListener.host);
        await eventually(() => traffic.stats().counters[`udp tunnel open failed: ${localOnlyRefusal}`] === 1 || undefined, 10_000, "the UDP refusal counted with its reason");
        expect(udpServed).toBe(before);
      } finally {
        client.close();
      }
    } finally {
      await traffic.stop();
    }
  }, 30_000);
});
