/**
 * Peers that hang up, reset and stall at every step of every protocol an agent
 * serves (issue 15, items 4 and 9), against a real agent process: its SOCKS5
 * proxy, its cluster-IP proxy listeners (TCP and UDP), its DNS over TCP, and its
 * DNS forwarder's TCP exchanges with an upstream that misbehaves. After every
 * fault the process lives, serves the next client, and holds no more sockets
 * than before (its /proc/PID/fd, and the actors' own gauges).
 *
 * A stream that did not finish must reach the other side as an RST: a target
 * that resets mid-transfer gives the client ECONNRESET (never a clean end with
 * fewer bytes), and a client that resets gives the target ECONNRESET.
 *
 * Then the same through a real tunnel between two agents' actors: a tunnel stream
 * cut at the far end, or under way, reaches the client as an RST.
 */
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { readdirSync, readlinkSync } from "node:fs";
import { connect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import dnsPacket from "dns-packet";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../bus/bus.ts";
import { IndexFeed } from "../bus/catalog-feed.ts";
import { createLogger, silentLogger } from "../lib/log.ts";
import { createSocksActor, type SocksActor } from "../services/socks/index.ts";
import { createTrafficActor, type TrafficActor } from "../services/traffic/index.ts";
import { createTunnelActor, type TunnelActor } from "../services/tunnel/index.ts";
import { frame, tcpExchange, type LoosePacket } from "./support/dns-servers.ts";
import {
  socksGreeting,
  socksRequest,
  startStallingListener,
  startTarget,
  startTruncatingUpstream,
  startUdpEcho,
  upstreamTcpFaults,
  watchEnding,
  type FaultTarget,
  type StallingListener,
  type TruncatingUpstream,
  type UdpEcho,
} from "./support/fault-targets.ts";
import { writeManifest } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { connected, readAtLeast, roundTrip, socksConnect } from "./support/socks-client.ts";
import { proxyListener, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess } from "./support/processes.ts";
import { listenerAddress, putService } from "./support/traffic-catalog.ts";
import { startFabric, testPsk, type TestFabric } from "./support/tunnel-fabric.ts";

/** The sockets a process holds: its fds that are sockets (an fd closing meanwhile is skipped). */
function socketFds(pid: number): number {
  let sockets = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:")) sockets++;
    } catch {
      // closed between the listing and the read
    }
  }
  return sockets;
}

const dnsQuery = (name: string, id = 1) => dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "A", name, class: "IN" }] });

/** Whether the socket is closed by the far side within `timeoutMs` (a FIN or an RST; not by us). */
function closedByPeer(socket: Socket, timeoutMs: number): Promise<boolean> {
  if (socket.readableEnded || socket.errored) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    socket.resume();
    const done = () => {
      clearTimeout(timer);
      resolve(true);
    };
    socket.once("end", done);
    socket.once("error", done);
  });
}

describe("an agent whose clients and targets hang up, reset and stall", () => {
  let agent: AgentProcess;
  let pid: number;
  let socksPort: number;
  let dnsPort: number;
  let baseline: number;
  const targets: Record<"echo" | "source" | "reset" | "silent", FaultTarget> = {} as never;
  let late: StallingListener;
  let never: StallingListener;
  let udpEcho: UdpEcho;
  let udpDeadPort: number;
  let upstream: TruncatingUpstream;
  const listener: Record<string, { host: string; port: number }> = {};

  const detail = async (name: string): Promise<Record<string, unknown>> => {
    const actor = (await agent.view()).status.actors.find((candidate) => candidate.name === name);
    return (actor?.detail ?? {}) as Record<string, unknown>;
  };

  const alive = () => agent.child.exitCode === null && agent.child.signalCode === null;

  /** The process lives and serves a new client of each kind: SOCKS, the cluster-IP proxy, DNS over TCP. */
  async function servesNextClients(): Promise<void> {
    expect(alive(), `the agent exited:\n${agent.output().slice(-3000)}`).toBe(true);
    const payload = randomBytes(64 * 1024);
    expect((await roundTrip(await socksConnect(socksPort, "127.0.0.1", targets.echo.port), payload)).equals(payload)).toBe(true);
    expect((await roundTrip(await connected(listener.echo), payload)).equals(payload)).toBe(true);
    const [reply] = await tcpExchange(dnsPort, frame(dnsQuery("echo.faults.svc.cluster.local", 7)), 1);
    expect(reply.answers?.map((record) => record.data)).toEqual(["198.19.50.1"]);
  }

  /** Back to the sockets it held at the start, by its own gauges and by its fds. */
  async function holdsNoMoreSockets(): Promise<void> {
    const gauges = async () => {
      const [socks, traffic, dns] = await Promise.all([detail("socks"), detail("traffic"), detail("dns")]);
      return { clients: socks.clients, dialing: socks.dialing, joined: socks.joined, connections: traffic.connections, tcpClients: dns.tcpClients, sockets: socketFds(pid) };
    };
    await eventually(
      async () => {
        const now = await gauges();
        return now.clients === 0 && now.dialing === 0 && now.joined === 0 && now.connections === 0 && now.tcpClients === 0 && now.sockets <= baseline;
      },
      15_000,
      "the agent to hold no more sockets than at the start",
    ).catch(async (error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify(await gauges())} (sockets at the start: ${baseline})`);
    });
  }

  async function expectHealthy(): Promise<void> {
    await servesNextClients();
    await holdsNoMoreSockets();
    expect(alive()).toBe(true);
  }

  beforeAll(async () => {
    targets.echo = await startTarget("echo");
    targets.source = await startTarget("source");
    targets.reset = await startTarget("reset");
    targets.silent = await startTarget("silent");
    late = await startStallingListener();
    never = await startStallingListener();
    await never.stall(10 * 60_000);
    udpEcho = await startUdpEcho();
    const dead = createSocket("udp4");
    await new Promise<void>((resolve) => dead.bind(0, "127.0.0.1", resolve));
    udpDeadPort = dead.address().port;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    upstream = await startTruncatingUpstream();

    const manifests = tempDir();
    const services: { name: string; protocol: "TCP" | "UDP"; port: number }[] = [
      { name: "echo", protocol: "TCP", port: targets.echo.port },
      { name: "source", protocol: "TCP", port: targets.source.port },
      { name: "reset", protocol: "TCP", port: targets.reset.port },
      { name: "never", protocol: "TCP", port: never.port },
      { name: "uecho", protocol: "UDP", port: udpEcho.port },
      { name: "udead", protocol: "UDP", port: udpDeadPort },
    ];
    writeManifest(
      manifests,
      "faults.yaml",
      services.flatMap((service, index) => [
        {
          apiVersion: "v1",
          kind: "Service",
          metadata: { name: service.name, namespace: "faults" },
          spec: { clusterIP: `198.19.50.${index + 1}`, ports: [{ name: "main", port: 80, targetPort: service.port, protocol: service.protocol }] },
        },
        {
          apiVersion: "discovery.k8s.io/v1",
          kind: "EndpointSlice",
          metadata: { name: `${service.name}-1`, namespace: "faults", labels: { "kubernetes.io/service-name": service.name } },
          addressType: "IPv4",
          endpoints: [{ addresses: ["127.0.0.1"], nodeName: "edge-a", conditions: { ready: true } }],
          ports: [{ name: "main", port: service.port, protocol: service.protocol }],
        },
      ]),
    );
    const hub = await startHubProcess({ name: "hub-1", manifests });
    socksPort = await freePort();
    dnsPort = await freePort();
    agent = await startAgentProcess({
      node: "edge-a",
      hubs: [hub.leafUrl],
      extraArgs: ["--socks", `127.0.0.1:${socksPort}`, "--dns", `127.0.0.1:${dnsPort}`, "--upstream", `127.0.0.1:${upstream.port}`, "--intercept", "off"],
    });
    pid = agent.child.pid!;
    for (const service of services) listener[service.name] = await proxyListener(agent, `faults/${service.name}:main/${service.protocol}`);
    // Warmed up once (what is made lazily is made), then the sockets it holds idle are the baseline.
    await servesNextClients();
    baseline = await eventually(async () => {
      const socks = await detail("socks");
      return socks.clients === 0 && socks.joined === 0 ? socketFds(pid) : undefined;
    }, 10_000, "the warm-up clients to close");
  }, 90_000);

  afterEach(() => {
    // A fault that ended the process fails the test that made it, with what the process said last.
    if (!alive()) throw new Error(`the agent exited (${agent.child.exitCode ?? agent.child.signalCode}):\n${agent.output().slice(-2000)}`);
  });

  afterAll(async () => {
    await stopAllProcesses();
    for (const target of Object.values(targets)) await target?.close();
    await late?.close();
    await never?.close();
    await udpEcho?.close();
    await upstream?.close();
  });

  describe("SOCKS5", () => {
    it("survives clients that hang up or reset during the greeting and the method choice", async () => {
      const faults: [string, (socket: Socket) => Promise<void> | void][] = [
        ["nothing sent, then FIN", (socket) => void socket.end()],
        ["nothing sent, then RST", (socket) => void socket.resetAndDestroy()],
        ["half a greeting, then FIN", (socket) => void socket.end(Buffer.of(0x05))],
        ["half a greeting, then RST", (socket) => void socket.write(Buffer.of(0x05, 0x02, 0x00), () => socket.resetAndDestroy())],
        ["a greeting, then RST before the method choice is read", (socket) => void socket.write(socksGreeting, () => socket.resetAndDestroy())],
        [
          "a greeting, the method choice read, then FIN",
          async (socket) => {
            socket.write(socksGreeting);
            expect([...(await readAtLeast(socket, 2))]).toEqual([0x05, 0x00]);
            socket.end();
          },
        ],
        [
          "a greeting, the method choice read, then RST",
          async (socket) => {
            socket.write(socksGreeting);
            await readAtLeast(socket, 2);
            socket.resetAndDestroy();
          },
        ],
      ];
      for (const [, fault] of faults) {
        const socket = await connected(socksPort);
        socket.on("error", () => undefined);
        await fault(socket);
      }
      // No acceptable method: the 0xff choice, then the proxy closes.
      const picky = await connected(socksPort);
      picky.write(Buffer.of(0x05, 0x01, 0x02));
      expect([...(await readAtLeast(picky, 2))]).toEqual([0x05, 0xff]);
      expect(await closedByPeer(picky, 5_000)).toBe(true);
      picky.destroy();
      await expectHealthy();
    });

    it("survives clients that hang up, reset or send garbage during the request", async () => {
      const faults: [string, (socket: Socket) => void, "closed by the proxy" | "left by the client"][] = [
        ["half a request, then FIN", (socket) => socket.end(Buffer.concat([socksGreeting, socksRequest("127.0.0.1", 1).subarray(0, 6)])), "closed by the proxy"],
        ["half a request, then RST", (socket) => socket.write(Buffer.concat([socksGreeting, socksRequest("127.0.0.1", 1).subarray(0, 6)]), () => socket.resetAndDestroy()), "left by the client"],
        ["a million garbage bytes after the greeting", (socket) => socket.write(Buffer.concat([socksGreeting, randomBytes(1_000_000)])), "closed by the proxy"],
        ["a million garbage bytes from the start", (socket) => socket.write(randomBytes(1_000_000)), "closed by the proxy"],
      ];
      for (const [name, fault, outcome] of faults) {
        const socket = await connected(socksPort);
        socket.on("error", () => undefined);
        fault(socket);
        if (outcome === "closed by the proxy") expect(await closedByPeer(socket, 5_000), name).toBe(true);
        socket.destroy();
      }
      // Refused requests get their reply code, then the proxy closes.
      for (const [request, code] of [
        [Buffer.of(0x04, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0, 80), 0x01],
        [Buffer.of(0x05, 0x01, 0x00, 0x09, 127, 0, 0, 1, 0, 80), 0x08],
        [Buffer.of(0x05, 0x02, 0x00, 0x01, 127, 0, 0, 1, 0, 80), 0x07],
      ] as const) {
        const socket = await connected(socksPort);
        socket.write(Buffer.concat([socksGreeting, request]));
        const reply = await readAtLeast(socket, 12);
        expect(reply[3]).toBe(code);
        expect(await closedByPeer(socket, 5_000)).toBe(true);
        socket.destroy();
      }
      await expectHealthy();
    });

    it("survives clients that leave while the target is being dialled, also when the dial then succeeds", async () => {
      // A target that never answers the SYN (a full accept queue: what a blackholed address does).
      for (const leave of [(socket: Socket) => socket.end(), (socket: Socket) => socket.destroy(), (socket: Socket) => socket.resetAndDestroy()]) {
        const socket = await connected(socksPort);
        socket.on("error", () => undefined);
        socket.write(Buffer.concat([socksGreeting, socksRequest("127.0.0.1", never.port)]));
        await readAtLeast(socket, 2);
        leave(socket);
      }
      // A target that answers late: the dial completes after the client left (the crash of issue 15, item 4).
      for (const leave of [(socket: Socket) => socket.destroy(), (socket: Socket) => socket.resetAndDestroy(), (socket: Socket) => socket.end()]) {
        await late.stall(1_500);
        const socket = await connected(socksPort);
        socket.on("error", () => undefined);
        socket.write(Buffer.concat([socksGreeting, socksRequest("127.0.0.1", late.port)]));
        await readAtLeast(socket, 2);
        leave(socket);
        await eventually(async () => (await detail("socks")).dialing === 0, 10_000, "the late dial to finish");
      }
      // A client that waits gets a failure reply when the dial times out.
      const patient = await connected(socksPort);
      patient.write(Buffer.concat([socksGreeting, socksRequest("127.0.0.1", never.port)]));
      const reply = await readAtLeast(patient, 12, 15_000);
      expect(reply[3]).toBe(0x04);
      expect(await closedByPeer(patient, 5_000)).toBe(true);
      patient.destroy();
      await expectHealthy();
    }, 60_000);

    it("after connect: a client FIN is passed on as a half-close, a client RST reaches the target as an RST", async () => {
      const quiet = await socksConnect(socksPort, "127.0.0.1", targets.echo.port);
      const echoed = new Promise((resolve) => quiet.once("end", resolve));
      quiet.end();
      quiet.resume();
      await echoed; // the echo target ended its side in answer
      for (const target of [targets.echo, targets.silent]) {
        const client = await socksConnect(socksPort, "127.0.0.1", target.port);
        const ending = target.nextEnding();
        client.resetAndDestroy();
        expect((await ending).how).toBe("ECONNRESET");
      }
      await expectHealthy();
    });

    it("mid-transfer: a target that resets gives the client an RST, a client that resets gives the target one", async () => {
      for (let round = 0; round < 3; round++) {
        const client = await socksConnect(socksPort, "127.0.0.1", targets.reset.port);
        client.write("go");
        const seen = await watchEnding(client);
        expect(seen.how, `round ${round}: ${seen.bytes} bytes then ${seen.how}`).toBe("ECONNRESET");
        expect(seen.bytes).toBeLessThanOrEqual(256 * 1024);
      }
      const reader = await socksConnect(socksPort, "127.0.0.1", targets.source.port);
      const ending = targets.source.nextEnding();
      await readAtLeast(reader, 1024 * 1024);
      reader.resetAndDestroy();
      expect((await ending).how).toBe("ECONNRESET");
      // An echo read back to the last byte (nothing unread anywhere), then an RST: the target must see it as one.
      const echo = await socksConnect(socksPort, "127.0.0.1", targets.echo.port);
      const echoEnding = targets.echo.nextEnding();
      echo.write(randomBytes(256 * 1024));
      await readAtLeast(echo, 256 * 1024);
      echo.resetAndDestroy();
      expect((await echoEnding).how).toBe("ECONNRESET");
      await expectHealthy();
    });
  });

  describe("cluster-IP TCP proxy", () => {
    it("survives clients that leave before the endpoint answers, and refuses with an RST when it never does", async () => {
      for (const leave of [(socket: Socket) => socket.end(), (socket: Socket) => socket.destroy(), (socket: Socket) => socket.resetAndDestroy()]) {
        const socket = await connected(listener.never);
        socket.on("error", () => undefined);
        leave(socket);
      }
      const patient = await connected(listener.never);
      expect((await watchEnding(patient)).how).toBe("ECONNRESET");
      await expectHealthy();
    });

    it("mid-transfer: an endpoint that resets gives the client an RST; a client that resets gives the endpoint one", async () => {
      for (let round = 0; round < 3; round++) {
        const client = await connected(listener.reset);
        client.write("go");
        const seen = await watchEnding(client);
        expect(seen.how, `round ${round}: ${seen.bytes} bytes then ${seen.how}`).toBe("ECONNRESET");
        expect(seen.bytes).toBeLessThanOrEqual(256 * 1024);
      }
      const echo = await connected(listener.echo);
      echo.on("error", () => undefined);
      const ending = targets.echo.nextEnding();
      echo.write(randomBytes(256 * 1024));
      await readAtLeast(echo, 256 * 1024);
      echo.resetAndDestroy();
      expect((await ending).how).toBe("ECONNRESET");
      const reader = await connected(listener.source);
      reader.on("error", () => undefined);
      const sourceEnding = targets.source.nextEnding();
      await readAtLeast(reader, 1024 * 1024);
      reader.resetAndDestroy();
      expect((await sourceEnding).how).toBe("ECONNRESET");
      // A whole stream still ends as a whole: every byte, then a clean end.
      const whole = await connected(listener.source);
      const all = await roundTrip(whole, Buffer.alloc(0));
      expect(all.length).toBe(32 * 1024 * 1024);
      await expectHealthy();
    });
  });

  describe("DNS over TCP", () => {
    it("survives half a length prefix, a length without its message, pipelined queries then a hang-up, and a million bad bytes", async () => {
      // Cluster names answered at once, and one forwarded to an upstream that never answers over TCP (2 s timeout).
      const pipelined = Buffer.concat(Array.from({ length: 2_000 }, (_, index) => frame(dnsQuery(index === 10 ? "stall.fault.test" : "echo.faults.svc.cluster.local", index))));
      const faults: [string, (socket: Socket) => unknown, "closed by the server" | "left by the client"][] = [
        ["half a length prefix, then FIN", (socket) => socket.end(Buffer.of(0x00)), "closed by the server"],
        ["half a length prefix, then RST", (socket) => socket.write(Buffer.of(0x00), () => socket.resetAndDestroy()), "left by the client"],
        ["a length without its message, then FIN", (socket) => socket.end(Buffer.of(0x00, 0x40)), "closed by the server"],
        ["a length and half its message, then RST", (socket) => socket.write(Buffer.concat([Buffer.of(0x00, 0x40), randomBytes(20)]), () => socket.resetAndDestroy()), "left by the client"],
        ["2,000 pipelined queries, then FIN", (socket) => socket.end(pipelined), "closed by the server"],
        ["2,000 pipelined queries, then RST", (socket) => socket.write(pipelined, () => socket.resetAndDestroy()), "left by the client"],
        ["2,000 pipelined queries, never read, then gone", (socket) => new Promise<void>((resolve) => socket.write(pipelined, () => setTimeout(() => resolve(void socket.destroy()), 500))), "left by the client"],
        // Random lengths frame random messages (FORMERR or dropped, each counted); one shorter than a header ends the connection.
        ["a million random bytes", (socket) => socket.write(randomBytes(1_000_000)), "left by the client"],
        ["a million bytes of well-framed garbage, then FIN", (socket) => socket.end(Buffer.concat(Array.from({ length: 1_000_000 / 514 }, () => frame(randomBytes(512))))), "closed by the server"],
      ];
      for (const [name, fault, outcome] of faults) {
        const socket = await connected(dnsPort);
        socket.on("error", () => undefined);
        await fault(socket);
        if (outcome === "closed by the server") expect(await closedByPeer(socket, 5_000), name).toBe(true);
        socket.destroy();
      }
      await expectHealthy();
    });

    it("survives a DNS upstream that misbehaves over TCP after a truncated UDP answer", async () => {
      for (const fault of upstreamTcpFaults) {
        const reply = await new Promise<Buffer>((resolve, reject) => {
          const socket = createSocket("udp4");
          const timer = setTimeout(() => (socket.close(), reject(new Error(`no answer for ${fault}`))), 10_000);
          socket.once("message", (message) => {
            clearTimeout(timer);
            socket.close();
            resolve(message);
          });
          socket.send(dnsQuery(`${fault}.fault.test`, 9), dnsPort, "127.0.0.1");
        });
        expect((dnsPacket.decode(reply) as LoosePacket).rcode, fault).toBe("SERVFAIL");
      }
      expect(upstream.tcpEndings.length).toBeGreaterThanOrEqual(upstreamTcpFaults.length);
      await expectHealthy();
    }, 60_000);
  });

  describe("stalls", () => {
    it("closes clients that stall mid-handshake, and serves others meanwhile", async () => {
      const stalled = await Promise.all(
        [
          { port: socksPort, bytes: Buffer.alloc(0) },
          { port: socksPort, bytes: Buffer.of(0x05) },
          { port: socksPort, bytes: Buffer.concat([socksGreeting, socksRequest("127.0.0.1", 1).subarray(0, 5)]) },
          { port: dnsPort, bytes: Buffer.of(0x00) },
          { port: dnsPort, bytes: Buffer.of(0x00, 0x40) },
        ].map(async ({ port, bytes }) => {
          const socket = await connected(port);
          socket.on("error", () => undefined);
          socket.write(bytes);
          return socket;
        }),
      );
      // A client that connected and then says nothing is a legitimate long-lived connection: kept.
      const idle = await socksConnect(socksPort, "127.0.0.1", targets.silent.port);
      const closing = stalled.map((socket) => closedByPeer(socket, 20_000));
      await servesNextClients();
      expect(await Promise.all(closing)).toEqual(stalled.map(() => true));
      expect(idle.destroyed).toBe(false);
      const ending = targets.silent.nextEnding();
      idle.end();
      expect((await ending).how).toBe("end");
      await expectHealthy();
    }, 60_000);
  });

  describe("UDP proxy", () => {
    it("expires flows, closes flows whose endpoint is unreachable, and keeps serving", async () => {
      const clients = await Promise.all(
        Array.from({ length: 20 }, async (_, index) => {
          const socket = createSocket("udp4");
          await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
          const port = index < 15 ? listener.uecho : listener.udead;
          const answered = index < 15 ? new Promise((resolve) => socket.once("message", resolve)) : undefined;
          socket.send(Buffer.from(`datagram ${index}`), port.port, port.host);
          await answered;
          return socket;
        }),
      );
      const counters = async () => ((await detail("traffic")).counters ?? {}) as Record<string, number>;
      // UDP is lossy, loopback too under load (a full socket buffer drops): the datagrams to the unreachable endpoint
      // are sent again while the wait lasts, as a client would, so one dropped datagram does not fail the test.
      await eventually(
        async () => {
          if ((await counters())["udp endpoint refused"] >= 1) return true;
          for (const socket of clients.slice(15)) socket.send(Buffer.from("again"), listener.udead.port, listener.udead.host);
          return false;
        },
        10_000,
        "flows to the unreachable endpoint to close",
      );
      for (const socket of clients) socket.close();
      // Flows live for the kernel's own UDP timeout (30 s) after their last datagram, then go.
      await eventually(async () => (await detail("traffic")).connections === 0, 50_000, "every UDP flow to expire");
      expect((await counters())["udp flow expired"]).toBeGreaterThanOrEqual(15);
      await expectHealthy();
    }, 90_000);
  });
});

describe("streams through a real tunnel whose far end or carrier is cut", () => {
  let fabric: TestFabric;
  let tunnelA: TunnelActor;
  let tunnelB: TunnelActor;
  let socks: SocksActor;
  let traffic: TrafficActor;
  const targets: Record<"source" | "reset" | "echo", FaultTarget> = {} as never;
  /** Every tunnel stream the proxies opened, to see how each was ended. */
  const opened: Duplex[] = [];

  beforeAll(async () => {
    targets.source = await startTarget("source", { bytes: 64 * 1024 * 1024 });
    targets.reset = await startTarget("reset");
    targets.echo = await startTarget("echo");
    fabric = await startFabric({ hubs: 1, leaves: ["edge-a", "edge-b"] });
    const tunnel = async (node: string) => {
      const nats = await fabric.connect(node);
      const log = silentLogger();
      const actor = createTunnelActor({ bus: new Bus({ connection: nats, node, log }), log, node, nats, listen: ["/ip4/127.0.0.1/tcp/0"], psk: testPsk, mdns: false, recordRefreshMs: 500 });
      await actor.start();
      return actor;
    };
    tunnelA = await tunnel("edge-a");
    tunnelB = await tunnel("edge-b");
    await eventually(() => tunnelA.directory?.get("edge-b"), 15_000, "edge-b's record");
    const dialer = { openStream: async (node: string, target: { host: string; port: number; protocol: "TCP" | "UDP" }, options?: { signal?: AbortSignal }) => {
      const stream = await tunnelA.openStream(node, target, options);
      opened.push(stream);
      return stream;
    } };
    const feed = new IndexFeed();
    for (const [index, name] of (["source", "reset", "echo"] as const).entries()) {
      putService(feed, { namespace: "faults", name, clusterIP: `198.19.51.${index + 1}`, ports: [{ name: "main", protocol: "TCP", port: 80, targetPort: targets[name].port }], endpoints: [{ ip: "127.0.0.1", node: "edge-b" }] });
    }
    socks = createSocksActor({ feed, log: process.env.DEBUG_FAULTS ? createLogger({ level: "debug" }) : silentLogger(), node: "edge-a", listen: { host: "127.0.0.1", port: 0 }, dialer, knownNodes: () => new Set(["edge-b"]) });
    await socks.start();
    traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", dialer });
    await traffic.start();
    // The path to edge-b made (its libp2p connection is part of the baseline), and carrying.
    const payload = randomBytes(1024);
    const echoed = await eventually(() => socksConnect(socks.address!.port, "edge-b", targets.echo.port).then((socket) => roundTrip(socket, payload), () => undefined), 20_000, "a stream to edge-b");
    expect(echoed.equals(payload)).toBe(true);
  }, 90_000);

  afterAll(async () => {
    await socks?.stop();
    await traffic?.stop();
    await tunnelA?.stop();
    await tunnelB?.stop();
    await fabric?.stop();
    for (const target of Object.values(targets)) await target?.close();
  });

  const listenerOf = (name: string) => listenerAddress(traffic.listeners().find((binding) => binding.key === `faults/${name}:main/TCP`)!);
  const tcpHandles = () => process.getActiveResourcesInfo().filter((kind) => kind === "TCPSocketWrap").length;

  /** Both proxies' ways to a target on edge-b: SOCKS by node name, and the cluster-IP listener of its Service. */
  const opens = (name: "source" | "reset" | "echo") => [() => socksConnect(socks.address!.port, "edge-b", targets[name].port), () => connected(listenerOf(name))];

  async function expectStreamsClosed(before: number): Promise<void> {
    await eventually(() => socks.stats().joined === 0 && traffic.stats().connections === 0 && tcpHandles() <= before, 10_000, "every stream closed").catch((error: Error) => {
      throw new Error(`${error.message}: joined ${socks.stats().joined}, connections ${traffic.stats().connections}, TCP handles ${tcpHandles()} (${before} before)`);
    });
  }

  it("a tunnel stream destroyed with an error mid-transfer gives the client an RST, never a clean end", async () => {
    const before = tcpHandles();
    for (const open of opens("source")) {
      const client = await open();
      const seen = watchEnding(client);
      await readAtLeast(client, 512 * 1024);
      client.resume();
      opened.at(-1)!.destroy(new Error("tunnel stream reset (by the test)"));
      const ending = await seen;
      expect(ending.how, `${ending.bytes} bytes then ${ending.how}`).toBe("ECONNRESET");
    }
    await expectStreamsClosed(before);
  });

  it("a tunnel connection cut mid-transfer gives the client an RST, never a clean end", async () => {
    // Each step bounded and named: this test ran out of its whole time in full runs on a loaded machine (it passes
    // alone in ~6 s), and a bare timeout did not say which way or which step hung.
    const within = <T>(promise: Promise<T>, ms: number, what: string) =>
      Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms).unref())]);
    for (const [index, open] of opens("source").entries()) {
      const way = index === 0 ? "SOCKS" : "the cluster-IP listener";
      const client = await eventually(() => open().catch(() => undefined), 20_000, `a stream to edge-b through ${way}`);
      const seen = watchEnding(client);
      await within(readAtLeast(client, 512 * 1024), 20_000, `512 KiB through ${way}`);
      // readAtLeast leaves the socket paused, and a paused socket whose buffer is full (64 KiB) no longer reads its
      // handle, so the proxy's RST went unheard: the hang of about one run in twelve, with the proxy's side done.
      client.resume();
      const cut = tunnelA.connectionsTo("edge-b").map(({ kind, connection }) => `${kind} ${connection.status}`);
      for (const { connection } of tunnelA.connectionsTo("edge-b")) connection.abort(new Error("cut by the test"));
      const ending = await within(seen, 30_000, `the end of the stream through ${way} after cutting [${cut.join(", ")}]`);
      expect(ending.how, `${ending.bytes} bytes then ${ending.how}`).toBe("ECONNRESET");
      expect(ending.bytes).toBeLessThan(64 * 1024 * 1024);
    }
  }, 120_000);

  it("a client that resets destroys its tunnel stream with an error (a reset for the far end), not an end", async () => {
    for (const open of opens("echo")) {
      const client = await eventually(() => open().catch(() => undefined), 20_000, "a stream to edge-b");
      client.on("error", () => undefined);
      const payload = randomBytes(64 * 1024);
      client.write(payload);
      await readAtLeast(client, payload.length);
      const stream = opened.at(-1)!;
      const closed = new Promise<Error | null>((resolve) => (stream.closed ? resolve(stream.errored) : stream.once("close", () => resolve(stream.errored))));
      client.resetAndDestroy();
      expect(await closed).toBeInstanceOf(Error);
      expect(stream.writableEnded).toBe(false);
    }
  }, 60_000);

  // The far end of a tunnel stream (services/tunnel/stream-server.ts) joins target and stream with
  // lib/join-streams.ts: a target's RST after connect is a cut (not a refused connect), a reset stream an RST.
  it("a target on the far node that resets mid-transfer gives the client an RST", async () => {
    for (const open of opens("reset")) {
      const client = await eventually(() => open().catch(() => undefined), 20_000, "a stream to edge-b");
      client.write("go");
      const seen = await watchEnding(client);
      expect(seen.how, `${seen.bytes} bytes then ${seen.how}`).toBe("ECONNRESET");
    }
  }, 60_000);

  it("a client that resets gives the target on the far node an RST", async () => {
    for (const open of opens("echo")) {
      const client = await eventually(() => open().catch(() => undefined), 20_000, "a stream to edge-b");
      client.on("error", () => undefined);
      client.write(randomBytes(1024));
      await readAtLeast(client, 1024);
      const farEnding = targets.echo.nextEnding();
      client.resetAndDestroy();
      expect((await farEnding).how).toBe("ECONNRESET");
    }
  }, 60_000);
});
