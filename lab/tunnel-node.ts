/**
 * A process the NAT lab runs inside a namespace: either the hub's NAT observer
 * or a tunnel agent. An agent connects to the leaf nats-server next to it,
 * serves an echo on 127.0.0.1:7007 (the target of test streams) and takes JSON
 * commands on stdin, one per line, answering one JSON line on stdout each.
 *
 *   node lab/tunnel-node.ts observer '{"hosts":["198.18.64.1","198.18.64.2"],"ports":[3478,3479]}'
 *   node lab/tunnel-node.ts agent '{"node":"s1h1","natsUrl":"nats://127.0.0.1:4222","psk":"...","observer":{...}}'
 *   stdin:  {"id":1,"op":"roundtrip","node":"s2h1","bytes":1048576}
 *   stdout: {"id":1,"ok":true,"kind":"hole-punched","ms":41}
 */
import { createHash, randomBytes, randomFillSync } from "node:crypto";
import { connect as netConnect, createServer } from "node:net";
import { createInterface } from "node:readline";
import { connect as tlsConnect, createServer as createTlsServer } from "node:tls";
import { PassThrough, type Duplex } from "node:stream";
import { Bus } from "../bus/bus.ts";
import { connectNats } from "../bus/connect.ts";
import { frameInPlace, framesEnds, withHeadroom } from "../lib/end-frames.ts";
import { describeError } from "../lib/errors.ts";
import { EarlyBytes } from "../lib/early-bytes.ts";
import { joinStreams } from "../lib/join-streams.ts";
import { createLogger } from "../lib/log.ts";
import { accountStreamBuffersInHeapLimits } from "../lib/stream-heap.ts";
import { createTunnelActor, startObserver, type NodeIdentity, type ObserverAddress } from "../services/tunnel/index.ts";
import { measureUpstreams } from "../nats/nearest.ts";
import type { RunningCpuProfile } from "../bench/profile/in-process.ts";
import { openTlsOverNats, serveTlsOverNats } from "./tls-over-nats.ts";

export const echoPort = 7007;
/** Reads everything, then answers with the byte count (8 bytes, big endian): throughput target. */
export const sinkPort = 7009;
/** The same echo and sink on every address, for raw TCP baselines (not through the tunnel). */
export const rawEchoPort = 7010;
/**
 * The benchmark's ceiling: Node's own TLS 1.3 (the node's certificate, no leafmesh code) on every
 * address, each connection joined to the local sink or echo with the agent's own splice
 * (lib/join-streams.ts: half-close passed on, a cut passed on as a reset, a side already gone
 * resets the other). What any Node process pays for the same security and shape.
 */
export const tlsSinkPort = 7011;
export const tlsEchoPort = 7012;
/** Writes bytes without end to whoever connects: the service a long download reads from. */
export const sourcePort = 7013;

/** TLS in front of a local port: decrypt, then joined to 127.0.0.1:target both ways. */
function tlsSpliceServer(identity: NodeIdentity, target: number) {
  // Mutual, as leafmesh's TLS streams are (docs/trust.md): the client's certificate asked for and checked against the mesh CA.
  return createTlsServer({ cert: identity.certPem, key: identity.keyPem, ca: identity.caPem, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3", allowHalfOpen: true }, (socket) => {
    const local = netConnect({ host: "127.0.0.1", port: target, noDelay: true });
    socket.setNoDelay(true);
    joinStreams(socket, local);
  });
}

function tlsConnectRaw(identity: NodeIdentity, host: string, port: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    // The node's own certificate presented, the server's checked against the mesh CA: the handshake leafmesh pays
    // (its name check, a string compare, left out).
    const socket = tlsConnect({ host, port, cert: identity.certPem, key: identity.keyPem, ca: identity.caPem, rejectUnauthorized: true, checkServerIdentity: () => undefined, minVersion: "TLSv1.3" });
    socket.setNoDelay(true);
    socket.once("secureConnect", () => resolve(socket));
    socket.once("error", reject);
  });
}

function sinkServer() {
  return createServer((socket) => {
    let count = 0;
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => (count += chunk.byteLength));
    socket.once("end", () => {
      const reply = Buffer.alloc(8);
      reply.writeBigUInt64BE(BigInt(count));
      socket.end(reply);
    });
  });
}

function sourceServer() {
  const piece = randomBytes(64 * 1024);
  return createServer((socket) => {
    socket.on("error", () => undefined);
    const pump = () => {
      while (!socket.destroyed && socket.write(piece));
    };
    socket.on("drain", pump);
    pump();
  });
}

/** Reads a stream from the source until it ends or fails: how it ended, what it carried. */
function download(stream: Duplex): Promise<{ bytes: number; ended: "end" | "error"; error?: string; ms: number }> {
  const started = performance.now();
  let bytes = 0;
  return new Promise((resolve) => {
    stream.on("data", (chunk: Buffer) => (bytes += chunk.byteLength));
    stream.once("end", () => resolve({ bytes, ended: "end", ms: performance.now() - started }));
    stream.once("error", (error) => resolve({ bytes, ended: "error", error: describeError(error), ms: performance.now() - started }));
  });
}

function echoServer() {
  return createServer((socket) => {
    socket.on("error", () => undefined);
    socket.pipe(socket);
  });
}

/** Sends `bytes` to a sink and waits for its count: MB/s over the whole exchange. */
async function throughput(stream: Duplex, bytes: number): Promise<number> {
  const piece = randomFillSync(withHeadroom(256 * 1024));
  // A stream that frames its ends (lib/end-frames.ts) is written as the agent's joins write one (the proxier,
  // SOCKS, the gateway: every way into the mesh): each read framed where it lies, in room left before it.
  // Written plainly, each 256 KiB would be copied behind its header into a new buffer, which no join pays.
  const next = framesEnds(stream) ? () => frameInPlace(piece, piece.length) : () => piece;
  const started = performance.now();
  const answered = new Promise<number>((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.once("end", () => resolve(Number(Buffer.concat(chunks).readBigUInt64BE(0))));
    stream.once("error", reject);
  });
  for (let sent = 0; sent < bytes; sent += piece.byteLength) {
    if (!stream.write(next())) await new Promise((resolve) => stream.once("drain", resolve));
  }
  stream.end();
  const counted = await answered;
  if (counted < bytes) throw new Error(`sink counted ${counted} of ${bytes} bytes`);
  return counted / 1e6 / ((performance.now() - started) / 1000);
}

/** One byte there and back, `count` times on one stream: RTT samples in ms. */
async function rttSamples(stream: Duplex, count: number): Promise<number[]> {
  const samples: number[] = [];
  let failed: Error | undefined;
  stream.on("error", (error) => (failed = error));
  for (let index = 0; index < count && !failed; index++) {
    const started = performance.now();
    await new Promise<void>((resolve) => {
      stream.once("data", () => resolve());
      stream.once("close", () => resolve());
      stream.write(Buffer.from([index & 255]));
    });
    samples.push(performance.now() - started);
  }
  stream.destroy();
  if (failed) throw failed;
  return samples;
}

/**
 * Time from asking for a new stream to the first echoed byte, `count` times, `gapMs` apart (0: back to back). The byte
 * is there before the open, as a client's first request is at a proxy: `open` may send it with the stream's header
 * (lib/early-bytes.ts; a tunnel stream to a peer of protocol 2 does), and the sample writes it only if not.
 */
async function firstByteSamples(open: (early: EarlyBytes) => Promise<Duplex>, count: number, gapMs = 0): Promise<number[]> {
  const samples: number[] = [];
  for (let index = 0; index < count; index++) {
    if (gapMs > 0) await new Promise((resolve) => setTimeout(resolve, gapMs));
    const started = performance.now();
    const client = new PassThrough();
    client.end(Buffer.from([1]));
    const early = new EarlyBytes(client);
    const stream = await open(early);
    await new Promise<void>((resolve, reject) => {
      stream.once("data", () => resolve());
      stream.once("error", reject);
      if (early.state !== "committed") stream.write(client.read() as Buffer);
    });
    samples.push(performance.now() - started);
    stream.destroy();
  }
  return samples;
}

function rawConnect(host: string, port: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port });
    socket.setNoDelay(true);
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

const [mode, configText] = process.argv.slice(2);
// The lab's teardown: exit at once, but through process.exit (so --cpu-prof profiles are written).
process.once("SIGTERM", () => process.exit(0));
const config = JSON.parse(configText ?? "{}") as Record<string, unknown>;
const log = createLogger({ level: process.env.LEAFMESH_LOG_LEVEL ?? "warn" }).child({ node: config.node ?? mode });
const reply = (message: unknown) => process.stdout.write(`${JSON.stringify(message)}\n`);

function roundTrip(stream: Duplex, payload: Buffer): Promise<{ bytes: Buffer; firstByteMs: number }> {
  const started = performance.now();
  let firstByteMs = -1;
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    stream.on("data", (chunk: Buffer) => {
      if (firstByteMs < 0) firstByteMs = performance.now() - started;
      chunks.push(chunk);
    });
    stream.once("end", () => resolve({ bytes: Buffer.concat(chunks), firstByteMs }));
    stream.once("error", reject);
    stream.end(payload);
  });
}

const sha = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

if (mode === "observer") {
  await startObserver({ hosts: config.hosts as [string, string], ports: config.ports as [number, number], log });
  reply({ event: "ready" });
} else if (mode === "agent") {
  const echo = createServer((socket) => {
    socket.on("error", () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => echo.listen(echoPort, "127.0.0.1", resolve));
  await new Promise<void>((resolve) => sinkServer().listen(sinkPort, "0.0.0.0", resolve));
  await new Promise<void>((resolve) => echoServer().listen(rawEchoPort, "0.0.0.0", resolve));
  await new Promise<void>((resolve) => sourceServer().listen(sourcePort, "127.0.0.1", resolve));
  const identity = config.identity as NodeIdentity | undefined;
  if (identity) {
    await new Promise<void>((resolve) => tlsSpliceServer(identity, sinkPort).listen(tlsSinkPort, "0.0.0.0", resolve));
    await new Promise<void>((resolve) => tlsSpliceServer(identity, echoPort).listen(tlsEchoPort, "0.0.0.0", resolve));
  }
  const node = config.node as string;
  // The leaf nats-server next to us may still be starting: bounded retries.
  let nats: Awaited<ReturnType<typeof connectNats>> | undefined;
  for (let attempt = 0; attempt < 60 && !nats; attempt++) {
    nats = await connectNats({ servers: [config.natsUrl as string], name: `lab agent ${node}` }).catch(async () => {
      await new Promise((resolve) => setTimeout(resolve, 250));
      return undefined;
    });
  }
  if (!nats) throw new Error(`${node}: leaf nats-server at ${config.natsUrl as string} never answered`);
  const bus = new Bus({ connection: nats, node, log });
  const tunnel = createTunnelActor({
    bus,
    log,
    node,
    nats,
    listen: ["/ip4/0.0.0.0/tcp/4101"],
    psk: config.psk as string,
    observer: config.observer as ObserverAddress | undefined,
    site: config.site as string | undefined,
    recordRefreshMs: 1_000,
    upgradeIntervalMs: 3_000,
    backoffMinMs: 500,
    backoffMaxMs: 4_000,
    // A lab that breaks paths on purpose pings its connections more often (tunnel-lab.ts `agents`).
    connectionPingIntervalMs: config.connectionPingIntervalMs as number | undefined,
    // A secured lab: the node's mesh certificate, and streams on direct paths over TLS (tls-streams.ts).
    identity: config.identity as NodeIdentity | undefined,
    tlsStreams: config.identity ? { host: "0.0.0.0", port: 4102 } : undefined,
    // What `leafmesh netcheck` times: the leaf's upstreams, as an agent's --hub.
    measureUpstreams: () => measureUpstreams((config.hubs as string[] | undefined) ?? []),
  });
  await tunnel.start();
  accountStreamBuffersInHeapLimits();
  reply({ event: "ready" });
  let cpuProfile: RunningCpuProfile | undefined;
  createInterface({ input: process.stdin }).on("line", (line) => {
    void (async () => {
      let request: { id: number; op: string; node?: string; bytes?: number };
      try {
        request = JSON.parse(line) as typeof request;
      } catch {
        return;
      }
      try {
        switch (request.op) {
          case "status":
            return reply({ id: request.id, ok: true, nat: tunnel.nat, records: tunnel.directory?.all().map((record) => record.node) ?? [], tlsStreams: tunnel.status().tlsStreams });
          case "record":
            // The record of a node this agent holds (mesh-nodes, through its directory).
            return reply({ id: request.id, ok: true, record: tunnel.directory?.get(request.node!) ?? null });
          case "download": {
            // A long download from the source on `node`, read until it ends or fails (the test changes the network meanwhile).
            const stream = await tunnel.openStream(request.node!, { host: "127.0.0.1", port: sourcePort, protocol: "TCP" });
            return reply({ id: request.id, ok: true, kind: tunnel.pathTo(request.node!), ...(await download(stream)) });
          }
          case "why":
            // What `leafmesh status --why` shows (rpc tunnel.why), without a CLI process per pair.
            return reply({ id: request.id, ok: true, why: tunnel.why(request.node!) });
          case "path":
            return reply({ id: request.id, ok: true, kind: tunnel.pathTo(request.node!) ?? null, detail: tunnel.pathDetail(request.node!), connections: tunnel.connectionsTo(request.node!).map((entry) => entry.kind) });
          case "roundtrip": {
            const payload = randomBytes(request.bytes ?? 65_536);
            const started = performance.now();
            const stream = await tunnel.openStream(request.node!, { host: "127.0.0.1", port: echoPort, protocol: "TCP" });
            const openedMs = performance.now() - started;
            const { bytes, firstByteMs } = await roundTrip(stream, payload);
            return reply({
              id: request.id,
              ok: sha(bytes) === sha(payload),
              length: bytes.byteLength,
              kind: tunnel.pathTo(request.node!),
              ms: performance.now() - started,
              openedMs,
              firstByteMs,
            });
          }
          case "throughput":
          case "latency": {
            // Through the tunnel (node), raw TCP (host), Node's TLS with no leafmesh (host, tls) or Node's TLS over
            // plain NATS (node, overNats: lab/tls-over-nats.ts): MB/s into the sink, or RTT and first-byte samples.
            const raw = typeof (request as { host?: string }).host === "string";
            const host = (request as { host?: string }).host!;
            const tls = (request as { tls?: boolean }).tls === true;
            const overNats = (request as { overNats?: boolean }).overNats === true;
            const open = (port: number, early?: EarlyBytes) =>
              raw
                ? tls
                  ? tlsConnectRaw(identity!, host, port === echoPort ? tlsEchoPort : tlsSinkPort)
                  : rawConnect(host, port === echoPort ? rawEchoPort : port)
                : overNats
                  ? openTlsOverNats(nats, node, request.node!, port, identity!)
                  : tunnel.openStream(request.node!, { host: "127.0.0.1", port, protocol: "TCP" }, { early });
            const kind = raw ? (tls ? "node-tls" : "raw") : overNats ? "node-tls-over-nats" : tunnel.pathTo(request.node!);
            if (request.op === "throughput") return reply({ id: request.id, ok: true, mbps: await throughput(await open(sinkPort), request.bytes ?? 32 * 1024 * 1024), kind });
            const rtt = await rttSamples(await open(echoPort), 200);
            const firstByte = await firstByteSamples((early) => open(echoPort, early), 30);
            // Streams as an application opens them now and then: what was made ahead of a stream is ready.
            const firstByteSpaced = await firstByteSamples((early) => open(echoPort, early), 20, 100);
            return reply({ id: request.id, ok: true, rtt, firstByte, firstByteSpaced, kind });
          }
          case "cpu": {
            // CPU this process used so far (user + system), for CPU per MiB in the benchmark.
            const usage = process.cpuUsage();
            return reply({ id: request.id, ok: true, cpuMs: (usage.user + usage.system) / 1000 });
          }
          case "profile-start": {
            // LEAFMESH_BENCH_PROFILE (bench/tunnel/run.ts): a CPU profile of this process around one transfer.
            // Imported here, so a lab that never profiles loads no inspector.
            if (cpuProfile) throw new Error("a CPU profile is already running");
            const { startCpuProfile } = await import("../bench/profile/in-process.ts");
            cpuProfile = await startCpuProfile((request as { intervalUs?: number }).intervalUs ?? 250);
            return reply({ id: request.id, ok: true });
          }
          case "profile-stop": {
            // Written now, not at exit: the lab kills its nodes at teardown.
            if (!cpuProfile) throw new Error("no CPU profile is running");
            const running = cpuProfile;
            cpuProfile = undefined;
            return reply({ id: request.id, ok: true, ...(await running.stopInto((request as { file?: string }).file!)) });
          }
          case "nats-serve": {
            // Plain NATS beside the relay: a sink that reports its byte count, and an echo, on this leaf;
            // and Node's TLS over plain NATS (lab/tls-over-nats.ts) to the local sink and echo.
            if (identity) serveTlsOverNats(nats, node, identity, [sinkPort, echoPort]);
            let count = 0;
            nats.subscribe(`bench.${node}.sink`, {
              callback: (_, message) => {
                if (message.data.byteLength === 0) {
                  message.respond(new TextEncoder().encode(String(count)));
                  count = 0;
                } else count += message.data.byteLength;
              },
            });
            nats.subscribe(`bench.${node}.echo`, { callback: (_, message) => void message.respond(message.data) });
            await nats.flush();
            return reply({ id: request.id, ok: true });
          }
          case "nats-throughput": {
            const to = request.node!;
            const bytes = request.bytes ?? 32 * 1024 * 1024;
            const piece = randomBytes(32 * 1024);
            const started = performance.now();
            for (let sent = 0; sent < bytes; sent += piece.byteLength) {
              nats.publish(`bench.${to}.sink`, piece);
              // A 1 MiB window, so neither side is a slow consumer.
              if ((sent / piece.byteLength) % 32 === 31) await nats.flush();
            }
            const counted = Number(new TextDecoder().decode((await nats.request(`bench.${to}.sink`, new Uint8Array(0), { timeout: 60_000 })).data));
            const mbps = counted / 1e6 / ((performance.now() - started) / 1000);
            return reply({ id: request.id, ok: counted >= bytes, mbps, counted });
          }
          case "nats-latency": {
            const rtt: number[] = [];
            for (let index = 0; index < 200; index++) {
              const begun = performance.now();
              await nats.request(`bench.${request.node!}.echo`, new Uint8Array([1]), { timeout: 5_000 });
              rtt.push(performance.now() - begun);
            }
            return reply({ id: request.id, ok: true, rtt });
          }
          case "stop":
            await tunnel.stop();
            await nats.close();
            reply({ id: request.id, ok: true });
            process.exit(0);
        }
        reply({ id: request.id, ok: false, error: `unknown op ${request.op}` });
      } catch (error) {
        reply({ id: request.id, ok: false, error: describeError(error) });
      }
    })();
  });
} else {
  console.error("usage: node lab/tunnel-node.ts observer|agent '<json config>'");
  process.exit(2);
}
