/**
 * Time, compressed: what an agent meets in months of running, a few hundred times over, and then what it
 * holds must be what it held before. Real hub and agent processes with keys on loopback (tunnel streams
 * each under TLS), the backends in this process on edge-b. Each cycle: TCP connections to a Service on
 * edge-b through edge-a's proxy and the tunnel (closed cleanly, reset by the client mid-transfer, reset by
 * the backend, reset by the client while the backend is silent, to an endpoint that refuses); a one-shot UDP
 * flow; DNS questions over UDP (a Service, an unknown Service, a name forwarded upstream, a malformed
 * packet) and over TCP (answered, cut mid-message); SOCKS connects (a Service, a node, an unknown name, a
 * refused port, an unknown node); gateway requests (answered, backend reset, no route, and now and then one
 * whose backend times out); and every few cycles a catalog change (Services added, others removed).
 * Afterwards, within a bounded wait, both agents' descriptors, Node handles and timers, actor tables and
 * nats-server connections and subscriptions are back to their baseline exactly (test/support/agent-holdings.ts).
 */
import { createSocket } from "node:dgram";
import { request } from "node:http";
import { createServer, connect, type Server, type Socket } from "node:net";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import dnsPacket from "dns-packet";
import { eventually, freePort } from "./support/ports.ts";
import { proxyListener, runCliOk as cli, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess } from "./support/processes.ts";
import { holdingsDiff, holdingsOf, type Holdings } from "./support/agent-holdings.ts";
import { socksConnect } from "./support/socks-client.ts";

const cycles = 200;
const servers: { close(): unknown }[] = [];
let edgeA: AgentProcess;
let edgeB: AgentProcess;
const monitor = { a: 0, b: 0 };
const ports = { backend: 0, refused: 0, udp: 0, dns: 0, socks: 0, gateway: 0 };
let manifests: string;

/**
 * What the backend sends, made once: a write only reads its buffer, never changes it, so every connection
 * writes the same one. The "s" stream writes ~9 MB a cycle before the client's reset reaches it (~1.9 GB in
 * 200 cycles); a fresh filled buffer per write cost the test worker ~6 s of CPU, and as much again in GC.
 */
const sends = { c: Buffer.alloc(64 * 1024, 1), s: Buffer.alloc(16 * 1024, 2), r: Buffer.alloc(32 * 1024, 3) };

/** A TCP backend that does what the first byte asks: c: 64 KiB then a clean end; s: stream until the client leaves; r: 32 KiB then an RST; q: nothing; G: an HTTP answer. */
function startBackend(): Server {
  return createServer((socket) => {
    socket.on("error", () => undefined);
    socket.once("data", (chunk: Buffer) => {
      const mode = String.fromCharCode(chunk[0]);
      if (mode === "c") socket.end(sends.c);
      else if (mode === "s") {
        const pump = () => {
          while (!socket.destroyed && socket.write(sends.s));
        };
        socket.on("drain", pump);
        pump();
      } else if (mode === "r") socket.write(sends.r, () => socket.resetAndDestroy());
      else if (mode === "G") socket.end("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
      else if (mode !== "q") socket.end();
    });
  });
}

const service = (name: string, clusterIP: string, port: number, protocol: "TCP" | "UDP", portName = "main") => `---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: shop }
spec: { clusterIP: ${clusterIP}, ports: [ { name: ${portName}, port: 80, targetPort: ${port}, protocol: ${protocol} } ] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: ${name}-1, namespace: shop, labels: { kubernetes.io/service-name: ${name} } }
addressType: IPv4
endpoints: [ { addresses: ["127.0.0.1"], nodeName: edge-b, conditions: { ready: true } } ]
ports: [ { name: ${portName}, port: ${port}, protocol: ${protocol} } ]
`;

async function listening<T extends Server>(server: T): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as { port: number }).port;
}

beforeAll(async () => {
  const base = tempDir("leafmesh-churn-");
  const keys = join(base, "keys");
  await cli("keys", "init", "--dir", keys);
  for (const node of ["edge-a", "edge-b"]) await cli("keys", "issue", "--dir", keys, "--node", node);
  ports.backend = await listening(startBackend());
  const resetting = createServer((socket) => (socket.on("error", () => undefined), socket.once("data", () => socket.resetAndDestroy())));
  const silent = createServer((socket) => void socket.on("error", () => undefined));
  const [resettingPort, silentPort] = [await listening(resetting), await listening(silent)];
  const echo = createSocket("udp4");
  echo.on("message", (message, from) => echo.send(message, from.port, from.address));
  await new Promise<void>((resolve) => echo.bind(0, "127.0.0.1", resolve));
  servers.push(echo);
  ports.udp = echo.address().port;
  // The DNS upstream: NXDOMAIN to everything (no SOA: not cached, every question goes upstream).
  const upstream = createSocket("udp4");
  upstream.on("message", (message, from) => {
    const reply = Buffer.from(message);
    reply.writeUInt16BE(0x8183, 2);
    upstream.send(reply, from.port, from.address);
  });
  await new Promise<void>((resolve) => upstream.bind(0, "127.0.0.1", resolve));
  servers.push(upstream);
  for (const key of ["refused", "dns", "socks", "gateway"] as const) ports[key] = await freePort();
  manifests = join(base, "manifests");
  mkdirSync(manifests);
  writeFileSync(
    join(manifests, "shop.yaml"),
    [
      service("web", "198.19.7.10", ports.backend, "TCP"),
      service("gone", "198.19.7.11", ports.refused, "TCP"),
      service("dgram", "198.19.7.12", ports.udp, "UDP"),
      service("pages", "198.19.7.13", ports.backend, "TCP", "http"),
      service("resets", "198.19.7.14", resettingPort, "TCP", "http"),
      service("silent", "198.19.7.15", silentPort, "TCP", "http"),
      `---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: { name: edge, namespace: shop }
spec: { selector: { site: churn }, servers: [ { port: { number: ${ports.gateway}, name: http, protocol: HTTP }, hosts: ["*"] } ] }
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: routes, namespace: shop }
spec:
  gateways: [edge]
  hosts: ["*"]
  http:
    - { match: [ { uri: { prefix: /ok/ } } ], route: [ { destination: { host: pages, port: { number: 80 } } } ] }
    - { match: [ { uri: { prefix: /reset/ } } ], route: [ { destination: { host: resets, port: { number: 80 } } } ] }
    - { match: [ { uri: { prefix: /slow/ } } ], timeout: 0.3s, route: [ { destination: { host: silent, port: { number: 80 } } } ] }
`,
    ].join(""),
  );
  const hub = await startHubProcess({ name: "hub-1", keys, manifests });
  const agentPorts = async () => ({ client: await freePort(), monitor: await freePort(), metrics: await freePort() });
  const [portsA, portsB] = [await agentPorts(), await agentPorts()];
  [monitor.a, monitor.b] = [portsA.monitor, portsB.monitor];
  // UDP flows idle for 1 s are let go (--proxy-udp-idle-timeout), so that the flows made here end within the test.
  const common = ["--mdns", "off", "--proxy-udp-idle-timeout", "1000"];
  [edgeB, edgeA] = await Promise.all([
    startAgentProcess({ node: "edge-b", hubs: [hub.leafUrl], keys: join(keys, "nodes", "edge-b"), ports: portsB, extraArgs: common }),
    startAgentProcess({
      node: "edge-a",
      hubs: [hub.leafUrl],
      keys: join(keys, "nodes", "edge-a"),
      ports: portsA,
      extraArgs: [...common, "--gateway", "127.0.0.1", "--node-labels", "site=churn", "--dns", `127.0.0.1:${ports.dns}`, "--upstream", `127.0.0.1:${(upstream.address()).port}`, "--socks", `127.0.0.1:${ports.socks}`],
    }),
  ]);
}, 90_000);

afterAll(async () => {
  await stopAllProcesses();
  for (const server of servers.splice(0)) server.close();
});

/** A TCP client of `target` sending `mode` (startBackend); s: resets after 100 KB, q: resets after 20 ms. Resolves once its socket closed, however. */
function tcpClient(target: { host: string; port: number }, mode: string): Promise<string> {
  return new Promise((resolve) => {
    const socket: Socket = connect(target.port, target.host);
    let received = 0;
    socket.on("connect", () => {
      socket.write(mode);
      if (mode === "q") setTimeout(() => socket.resetAndDestroy(), 20);
    });
    socket.on("data", (chunk: Buffer) => {
      received += chunk.length;
      if (mode === "s" && received > 100_000) socket.resetAndDestroy();
    });
    socket.on("end", () => socket.end());
    socket.on("error", () => undefined);
    // A connection the proxy leaves open ends the test's wait, not the test: it shows among the outcomes.
    const deadline = setTimeout(() => (resolve(`tcp ${mode} still open after 5 s`), socket.destroy()), 5_000);
    socket.on("close", (hadError) => (clearTimeout(deadline), resolve(`tcp ${mode} ${hadError ? "reset" : mode === "c" ? `closed after ${received}` : "closed"}`)));
  });
}

/** One datagram to `port` from a socket of its own; resolves with `what` and whether a reply came within `waitMs`. */
function datagram(what: string, port: number, payload: Uint8Array, waitMs: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = createSocket("udp4");
    const done = (result: string) => (clearTimeout(timer), socket.close(), resolve(`${what} ${result}`));
    const timer = setTimeout(() => done("unanswered"), waitMs);
    socket.on("message", (reply) => done(what.startsWith("dns") ? `rcode ${reply[3] & 0xf}` : "answered"));
    socket.send(payload, port, "127.0.0.1");
  });
}

const question = (name: string) => dnsPacket.encode({ type: "query", id: 4242, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "A", name }] });

/** A DNS question over TCP: answered and closed, or cut after half its length prefix's message. */
function dnsOverTcp(cut: boolean): Promise<string> {
  return new Promise((resolve) => {
    const message = question("web.shop.svc.cluster.local");
    const framed = Buffer.concat([Buffer.from([message.length >> 8, message.length & 0xff]), message]);
    const socket = connect(ports.dns, "127.0.0.1");
    socket.on("connect", () => (cut ? (socket.write(framed.subarray(0, 9)), setTimeout(() => socket.resetAndDestroy(), 10)) : socket.write(framed)));
    socket.on("data", () => socket.end());
    socket.on("error", () => undefined);
    const deadline = setTimeout(() => (resolve("dns tcp still open after 5 s"), socket.destroy()), 5_000);
    socket.on("close", () => (clearTimeout(deadline), resolve("dns tcp done")));
  });
}

function gatewayGet(path: string): Promise<string> {
  return new Promise((resolve) => {
    const call = request({ host: "127.0.0.1", port: ports.gateway, path, headers: { host: "shop.example.com" }, agent: false, timeout: 5_000 }, (response) => {
      response.resume();
      response.on("end", () => resolve(`gateway ${path} ${response.statusCode}`));
      response.on("error", () => resolve(`gateway ${path} cut`));
    });
    call.on("error", () => resolve(`gateway ${path} error`));
    call.on("timeout", () => call.destroy());
    call.end();
  });
}

async function viaSocks(host: string, port: number, mode: string): Promise<string> {
  const socket = await socksConnect(ports.socks, host, port).catch(() => undefined);
  if (!socket) return `socks ${host} refused`;
  socket.resume();
  return new Promise((resolve) => {
    socket.on("end", () => socket.end());
    const deadline = setTimeout(() => (resolve(`socks ${host} still open after 5 s`), socket.destroy()), 5_000);
    socket.on("close", () => (clearTimeout(deadline), resolve(`socks ${host} done`)));
    socket.write(mode);
    if (mode === "q") setTimeout(() => socket.resetAndDestroy(), 20);
  });
}

/** The version of the catalog edge-a's DNS answers from: one more for each object put or deleted. */
async function catalogVersion(agent: AgentProcess): Promise<number> {
  const dns = (await agent.view()).status.actors.find((actor) => actor.name === "dns");
  return (dns?.detail as { catalogVersion: number }).catalogVersion;
}

describe("an agent after a few hundred cycles of every churn it meets", () => {
  // 240 s: the 200 cycles took 98 s in one loaded full run and more than 120 s in the next (2026-12-08); what is
  // checked is what the agents hold after them, not how fast they went.
  it("holds what it held before: descriptors, handles, timers, actor tables, its nats-server's connections and subscriptions", { timeout: 240_000 }, async () => {
    const web = await proxyListener(edgeA, "shop/web:main/TCP");
    const gone = await proxyListener(edgeA, "shop/gone:main/TCP");
    const dgram = await proxyListener(edgeA, "shop/dgram:main/UDP");
    // Everything once before the baseline: the path to edge-b, the gateway's routes, the first of each kind.
    await eventually(async () => (await tcpClient(web, "c")) === "tcp c closed after 65536", 30_000, "a connection through the tunnel");
    await eventually(async () => (await gatewayGet("/ok/")) === "gateway /ok/ 200", 20_000, "the gateway's first answer");
    expect(await datagram("udp", dgram.port, Buffer.from("ping"), 3_000)).toBe("udp answered");
    const settled = async (agent: AgentProcess, port: number) => {
      // Two equal readings a second apart: the warm-up's UDP flow expired, and nothing else is on its way out.
      let last: Holdings | undefined;
      return eventually(async () => {
        const now = await holdingsOf(agent, port);
        const same = last !== undefined && holdingsDiff(last, now).length === 0 && now["traffic connections and flows"] === 0;
        last = now;
        if (!same) await new Promise((resolve) => setTimeout(resolve, 1_000));
        return same && now;
      }, 15_000, `${agent.name} to settle before the churn`);
    };
    const baseline = { a: await settled(edgeA, monitor.a), b: await settled(edgeB, monitor.b) };
    const versionBefore = await catalogVersion(edgeA);

    const outcomes = new Map<string, number>();
    const slow: Promise<string>[] = [];
    let catalogStep = 0;
    for (let cycle = 0; cycle < cycles; cycle++) {
      const work = [
        tcpClient(web, "c"), tcpClient(web, "s"), tcpClient(web, "r"), tcpClient(web, "q"), tcpClient(gone, "c"),
        datagram("udp", dgram.port, Buffer.from(`flow ${cycle}`), 3_000),
        datagram("dns service", ports.dns, question("web.shop.svc.cluster.local"), 2_000), datagram("dns unknown service", ports.dns, question("nope.shop.svc.cluster.local"), 2_000),
        datagram("dns forwarded", ports.dns, question(`host-${cycle}.example.org`), 2_000), datagram("dns malformed", ports.dns, Buffer.from([cycle & 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]), 2_000),
        dnsOverTcp(cycle % 2 === 0),
        viaSocks("web.shop.svc.cluster.local", 80, cycle % 2 === 0 ? "c" : "q"), viaSocks("edge-b", ports.backend, "c"), viaSocks("nope.shop.svc.cluster.local", 80, "c"), viaSocks("edge-b", ports.refused, "c"), viaSocks("edge-q", 80, "c"),
        gatewayGet("/ok/"), gatewayGet("/reset/"), gatewayGet("/none"),
      ];
      if (cycle % 10 === 0) slow.push(gatewayGet("/slow/"));
      if (cycle % 20 === 0) {
        // A catalog change: three Services (TCP and UDP) in, the previous step's out.
        const step = catalogStep++;
        writeFileSync(join(manifests, `step-${step}.yaml`), [0, 1, 2].map((index) => service(`step-${step}-${index}`, `198.19.${20 + step}.${index + 1}`, ports.backend, index === 1 ? "UDP" : "TCP")).join(""));
        if (step > 0) rmSync(join(manifests, `step-${step - 1}.yaml`));
      }
      for (const outcome of await Promise.all(work)) outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    for (const outcome of await Promise.all(slow)) outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    rmSync(join(manifests, `step-${catalogStep - 1}.yaml`));
    // The churn did what it says: every kind happened, answered as it should.
    // The churn did what it says: every kind happened, and each ended as it should.
    const each = (outcomesOfOne: string[]) => Object.fromEntries(outcomesOfOne.map((outcome) => [outcome, cycles]));
    expect(Object.fromEntries(outcomes)).toEqual({
      ...each(["tcp c closed after 65536", "tcp s closed", "tcp r reset", "tcp q closed", "tcp c reset", "udp answered"]),
      ...each(["dns service rcode 0", "dns unknown service rcode 3", "dns forwarded rcode 3", "dns malformed rcode 1", "dns tcp done"]),
      ...each(["socks web.shop.svc.cluster.local done", "socks edge-b done", "socks nope.shop.svc.cluster.local refused", "socks edge-b refused", "socks edge-q refused"]),
      ...each(["gateway /ok/ 200", "gateway /reset/ 502", "gateway /none 404"]),
      "gateway /slow/ 504": cycles / 10,
    });
    // ... and the catalog changes reached edge-a: each step put three Services and their slices, and deleted the last step's.
    await eventually(async () => (await catalogVersion(edgeA)) >= versionBefore + (catalogStep * 2 - 1) * 6, 10_000, "edge-a to take every catalog change");

    for (const [name, agent, port] of [["a", edgeA, monitor.a], ["b", edgeB, monitor.b]] as const) {
      let diff: string[] = [];
      await eventually(async () => (diff = holdingsDiff(baseline[name], await holdingsOf(agent, port)), diff.length === 0), 10_000, `${agent.name} back to its baseline`).catch((error: Error) => {
        throw new Error(`${agent.name} holds more after ${cycles} cycles than before:\n${diff.join("\n")}`, { cause: error });
      });
    }
    expect(edgeA.child.exitCode).toBeNull();
    expect(edgeB.child.exitCode).toBeNull();
  });
});
