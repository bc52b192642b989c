/**
 * Reads into a buffer of the copy's own (lib/read-buffers.ts), through joinStreams
 * over real loopback sockets: client ⇄ [proxy] ⇄ target. What must hold: every
 * byte arrives intact and in order while the reused buffer is written out under
 * backpressure (a target that reads in bursts), ends and resets pass as before,
 * and the big buffers stay within their bound and come back.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from "node:tls";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loopbackPairs, type LoopbackPairs } from "../test/support/loopback-pairs.ts";
import { createCertificateAuthority, issueCertificate } from "../trust/tls.ts";
import { joinStreams, type JoinOutcome } from "./join-streams.ts";
import { silentLogger } from "./log.ts";
import { MetricsServer } from "./metrics.ts";
import { bigBuffersMax, canReadIntoOwnBuffer, readBufferStats, watchesReadsOnly } from "./read-buffers.ts";

const sha = (data: Buffer) => createHash("sha256").update(data).digest("hex");

/** Everything a socket reads until its end or error, read in bursts: paused for `pauseMs` after every `burst` bytes. */
function drain(socket: Socket, options: { burst?: number; pauseMs?: number } = {}): Promise<{ data: Buffer; how: string }> {
  const chunks: Buffer[] = [];
  let sinceBreak = 0;
  socket.on("data", (chunk: Buffer) => {
    chunks.push(chunk);
    sinceBreak += chunk.length;
    if (options.burst && sinceBreak >= options.burst) {
      sinceBreak = 0;
      socket.pause();
      setTimeout(() => socket.resume(), options.pauseMs ?? 5);
    }
  });
  return new Promise((resolve) => {
    socket.once("end", () => resolve({ data: Buffer.concat(chunks), how: "end" }));
    socket.once("error", (error: NodeJS.ErrnoException) => resolve({ data: Buffer.concat(chunks), how: error.code ?? error.message }));
  });
}

/** Writes `data` in pieces of 1 MiB, waiting for 'drain' (or a close), then ends (or not). */
async function send(socket: Socket, data: Buffer, end = true): Promise<void> {
  for (let at = 0; at < data.length && !socket.destroyed; at += 1 << 20) {
    if (socket.write(data.subarray(at, at + (1 << 20)))) continue;
    await new Promise<void>((resolve) => {
      const done = () => {
        socket.off("drain", done);
        socket.off("close", done);
        resolve();
      };
      socket.on("drain", done);
      socket.on("close", done);
    });
  }
  if (end) socket.end();
}

describe("reads into the copy's own buffer", () => {
  let pairs: LoopbackPairs;
  beforeAll(async () => (pairs = await loopbackPairs()));
  afterAll(() => pairs.close());
  const pair = () => pairs.pair();
  const proxied = () => pairs.proxied();

  it("carries bulk both ways intact while the target and the client read in bursts (writes left pending hold the reads back)", async () => {
    const before = readBufferStats();
    const { client, target, closed } = await proxied();
    const up = randomBytes(24 << 20);
    const down = randomBytes(24 << 20);
    const atTarget = drain(target, { burst: 1 << 20, pauseMs: 3 });
    const atClient = drain(client, { burst: 1 << 20, pauseMs: 3 });
    await Promise.all([send(client, up), send(target, down)]);
    const [received, returned] = await Promise.all([atTarget, atClient]);
    expect(received.how).toBe("end");
    expect(returned.how).toBe("end");
    expect(received.data.length).toBe(up.length);
    expect(sha(received.data)).toBe(sha(up));
    expect(sha(returned.data)).toBe(sha(down));
    expect(await closed).toEqual({ complete: true });
    const after = readBufferStats();
    expect(after.directionsSwitched - before.directionsSwitched).toBe(2);
    expect(after.readsHeldForWrites).toBeGreaterThan(before.readsHeldForWrites);
    expect(after.bigBuffersLent).toBe(before.bigBuffersLent);
    // Every process's /metrics says so.
    const metrics = await new MetricsServer({ log: silentLogger() }).registry.metrics();
    expect(metrics).toMatch(new RegExp(`^leafmesh_read_buffer_switches_total ${after.directionsSwitched}$`, "m"));
    expect(metrics).toMatch(/^leafmesh_read_buffers_big \d+$/m);
  });

  it("passes a target's RST in the middle of bulk on to the client as a reset, never an end", async () => {
    const before = readBufferStats().directionsSwitched;
    const { client, target, closed } = await proxied();
    const atClient = drain(client);
    let got = 0;
    target.on("data", (chunk: Buffer) => {
      got += chunk.length;
      if (got > 8 << 20 && !target.destroyed) target.resetAndDestroy();
    });
    void send(target, randomBytes(4 << 20), false);
    await send(client, randomBytes(64 << 20), false).catch(() => undefined);
    const ending = await atClient;
    expect(ending.how).toBe("ECONNRESET");
    const outcome = await closed;
    expect(outcome.complete).toBe(false);
    expect(outcome.cutBy).toBe("b");
    expect(readBufferStats().directionsSwitched).toBeGreaterThan(before);
  });

  it("passes a client's RST in the middle of bulk on to the target as a reset", async () => {
    const before = readBufferStats().directionsSwitched;
    const { client, target, closed } = await proxied();
    const atTarget = drain(target);
    const sent = send(client, randomBytes(64 << 20), false).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 30));
    client.resetAndDestroy();
    await sent;
    const ending = await atTarget;
    expect(ending.how).toBe("ECONNRESET");
    expect((await closed).cutBy).toBe("a");
    expect(readBufferStats().directionsSwitched).toBeGreaterThan(before);
  });

  /** A CA and a server certificate for 127.0.0.1, made once. */
  let tlsDir: string;
  let tlsFiles: { ca: Buffer; cert: Buffer; key: Buffer };
  beforeAll(async () => {
    tlsDir = mkdtempSync(join(tmpdir(), "read-buffers-"));
    const ca = { certFile: join(tlsDir, "ca.crt"), keyFile: join(tlsDir, "ca.key") };
    await createCertificateAuthority({ ...ca, name: "read-buffers test" });
    const server = { certFile: join(tlsDir, "s.crt"), keyFile: join(tlsDir, "s.key") };
    await issueCertificate({ ...server, caCertFile: ca.certFile, caKeyFile: ca.keyFile, commonName: "localhost", hosts: ["127.0.0.1"] });
    tlsFiles = { ca: readFileSync(ca.certFile), cert: readFileSync(server.certFile), key: readFileSync(server.keyFile) };
  });
  afterAll(() => rmSync(tlsDir, { recursive: true, force: true }));

  /** A TLS connection on loopback: the dialling end and the accepted end, both connected. */
  async function tlsPair(): Promise<[TLSSocket, TLSSocket]> {
    let accepted!: (socket: TLSSocket) => void;
    const far = new Promise<TLSSocket>((resolve) => (accepted = resolve));
    const server = createTlsServer({ cert: tlsFiles.cert, key: tlsFiles.key, allowHalfOpen: true }, (socket) => {
      server.close();
      accepted(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const near = tlsConnect({ port: (server.address() as { port: number }).port, host: "127.0.0.1", ca: tlsFiles.ca });
    await new Promise((resolve) => near.once("secureConnect", resolve));
    return [near, await far];
  }

  it("carries bulk intact into a TLS socket (a tunnel stream) whose far end reads in bursts, and passes the client's end on", async () => {
    const [client, proxyClient] = await pair();
    const [tunnel, sink] = await tlsPair();
    const before = readBufferStats();
    joinStreams(proxyClient, tunnel);
    const atSink = drain(sink as unknown as Socket, { burst: 1 << 20, pauseMs: 3 });
    const payload = randomBytes(24 << 20);
    await send(client, payload);
    const received = await atSink;
    expect(received.how).toBe("end");
    expect(received.data.length).toBe(payload.length);
    expect(sha(received.data)).toBe(sha(payload));
    expect(readBufferStats().directionsSwitched).toBeGreaterThan(before.directionsSwitched);
    // The client's way ended; the other stays open, and the big buffer is back already.
    expect(readBufferStats().bigBuffersLent).toBe(before.bigBuffersLent);
    for (const socket of [client, sink]) socket.destroy();
  });

  it("carries bulk intact out of a TLS socket (a tunnel stream's far end) into a target that reads in bursts, a record a read, with no big buffer", async () => {
    const [tunnel, proxyStream] = await tlsPair();
    const [proxyUpstream, target] = await pair();
    const before = readBufferStats();
    let lentMost = 0;
    const sampler = setInterval(() => (lentMost = Math.max(lentMost, readBufferStats().bigBuffersLent - before.bigBuffersLent)), 1);
    const closed = new Promise<JoinOutcome>((resolve) => joinStreams(proxyStream, proxyUpstream, { onClose: resolve }));
    const atTarget = drain(target, { burst: 1 << 20, pauseMs: 3 });
    const payload = randomBytes(24 << 20);
    await send(tunnel as unknown as Socket, payload);
    const received = await atTarget;
    clearInterval(sampler);
    expect(received.how).toBe("end");
    expect(sha(received.data)).toBe(sha(payload));
    const after = readBufferStats();
    expect(after.directionsSwitched).toBeGreaterThan(before.directionsSwitched);
    expect(after.readsHeldForWrites).toBeGreaterThan(before.readsHeldForWrites);
    expect(lentMost).toBe(0);
    target.end();
    tunnel.on("data", () => undefined);
    expect(await closed).toEqual({ complete: true });
    expect(readBufferStats().directionsOpen).toBe(before.directionsOpen);
  });

  it("gives its big buffer back when a client resets while the target stalls with a write of the buffer pending", async () => {
    const before = readBufferStats();
    const { client, target, closed } = await proxied();
    target.pause(); // accepts, does not read: the proxy's write to it stays pending, and the proxy reads no more
    const sent = send(client, randomBytes(96 << 20), false).catch(() => undefined);
    await expect.poll(() => readBufferStats().readsHeldForWrites > before.readsHeldForWrites, { timeout: 10_000 }).toBe(true);
    client.resetAndDestroy();
    await sent;
    // A socket that is not read is not polled: the proxy hears the client's RST at its next read, once the
    // target takes the pending write (as with Node's own streams, which stop reading at their high-water mark).
    await new Promise((resolve) => setTimeout(resolve, 200));
    const atTarget = drain(target);
    target.resume();
    const outcome = await closed;
    expect(outcome.complete).toBe(false);
    expect(outcome.cutBy).toBe("a");
    expect((await atTarget).how).toBe("ECONNRESET");
    expect(readBufferStats().bigBuffersLent).toBe(before.bigBuffersLent);
  });

  it("lends at most its bound of big buffers to flows at once, and takes them back when reads turn small", async () => {
    const flows = await Promise.all(Array.from({ length: bigBuffersMax + 8 }, () => proxied()));
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, readBufferStats().bigBuffersLent)), 1);
    const payload = randomBytes(6 << 20);
    const arrived = flows.map(({ target }) => {
      const chunks: Buffer[] = [];
      let length = 0;
      return new Promise<Buffer>((resolve) =>
        target.on("data", (chunk: Buffer) => {
          chunks.push(chunk);
          length += chunk.length;
          if (length === payload.length) resolve(Buffer.concat(chunks));
        }),
      );
    });
    await Promise.all(flows.map(({ client }) => send(client, payload, false)));
    const received = await Promise.all(arrived);
    clearInterval(sampler);
    expect(received.every((data) => data.equals(payload))).toBe(true);
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(bigBuffersMax);

    // The same connections, now with small messages: each read of under 16 KiB gives a big buffer back.
    const echoes = flows.map(({ client, target }, index) => {
      target.removeAllListeners("data");
      target.on("data", (chunk: Buffer) => target.write(chunk));
      const message = Buffer.from(`small message ${index}`);
      return new Promise<Buffer>((resolve) => {
        client.once("data", resolve);
        client.write(message);
      }).then((echo) => expect(echo.toString()).toBe(message.toString()));
    });
    await Promise.all(echoes);
    expect(readBufferStats().bigBuffersLent).toBe(0);
    for (const { client } of flows) client.end();
    const outcomes = await Promise.all(flows.map(({ target, closed }) => (target.end(), closed)));
    expect(outcomes.every((outcome) => outcome.complete)).toBe(true);
  });

  it("is never taken from a socket into a JavaScript stream, nor with bytes already buffered, nor with another reader listening", async () => {
    const [near, far] = await pair();
    expect(canReadIntoOwnBuffer(far, new PassThrough())).toBe(false);
    const [other] = await pair();
    expect(canReadIntoOwnBuffer(far, other)).toBe(true);
    // Another reader of the socket would stop hearing: a byte counter, a sniffer not yet done.
    const counter = () => undefined;
    far.on("data", counter);
    far.on("data", () => undefined);
    expect(canReadIntoOwnBuffer(far, other)).toBe(false);
    far.removeAllListeners("data");
    // A listener that only watches for reads (the tunnel's batching of writes) is no reader: it goes at the switch.
    far.on("data", Object.assign(() => undefined, { [watchesReadsOnly]: true }));
    far.on("data", counter);
    expect(canReadIntoOwnBuffer(far, other)).toBe(true);
    far.removeAllListeners("data");
    far.pause();
    near.write("buffered");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(far.readableLength).toBeGreaterThan(0);
    expect(canReadIntoOwnBuffer(far, other)).toBe(false);
    for (const socket of [near, far, other]) socket.destroy();
  });
});
