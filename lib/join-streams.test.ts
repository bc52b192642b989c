/**
 * joinStreams over real loopback sockets: a proxy in the middle of two TCP
 * connections (client ⇄ proxy ⇄ target), and of a socket and a plain Duplex
 * (what a tunnel stream is to the proxy).
 */
import { randomBytes } from "node:crypto";
import { connect as connectTcp, type Socket } from "node:net";
import { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from "node:tls";
import { createCertificateAuthority, issueCertificate } from "../trust/tls.ts";
import { loopbackPairs, type LoopbackPairs } from "../test/support/loopback-pairs.ts";
import { joinStreams, resetStream, stallProbeMs, type JoinOutcome } from "./join-streams.ts";

/** How a socket's far end finished, as its reader saw it. */
interface Ending {
  bytes: number;
  how: "end" | string;
}

function watchEnding(socket: Socket): Promise<Ending> {
  let bytes = 0;
  socket.on("data", (chunk: Buffer) => (bytes += chunk.length));
  return new Promise((resolve) => {
    socket.once("end", () => resolve({ bytes, how: "end" }));
    socket.once("error", (error: NodeJS.ErrnoException) => resolve({ bytes, how: error.code ?? error.message }));
  });
}

describe("joinStreams", () => {
  let pairs: LoopbackPairs;
  beforeAll(async () => (pairs = await loopbackPairs()));
  afterAll(() => pairs.close());
  const pair = () => pairs.pair();
  const proxied = () => pairs.proxied();

  it("carries both ways with half-close, and closes both as complete", async () => {
    const { client, target, closed } = await proxied();
    target.on("data", (chunk: Buffer) => target.write(chunk));
    target.once("end", () => target.end("bye"));
    const payload = randomBytes(4 * 1024 * 1024);
    const received: Buffer[] = [];
    client.on("data", (chunk: Buffer) => received.push(chunk));
    const ended = new Promise((resolve) => client.once("end", resolve));
    client.end(payload);
    await ended;
    expect(Buffer.concat(received).equals(Buffer.concat([payload, Buffer.from("bye")]))).toBe(true);
    expect(await closed).toEqual({ complete: true });
  });

  it("gives the client an RST, not an end, when the target resets mid-transfer", async () => {
    const { client, target, closed } = await proxied();
    const ending = watchEnding(client);
    target.write(randomBytes(64 * 1024), () => target.resetAndDestroy());
    const seen = await ending;
    expect(seen.how).toBe("ECONNRESET");
    expect(seen.bytes).toBeLessThanOrEqual(64 * 1024);
    expect((await closed).cutBy).toBe("b");
  });

  it("gives the target an RST, not an end, when the client resets", async () => {
    const { client, target, closed } = await proxied();
    const ending = watchEnding(target);
    client.write(randomBytes(16 * 1024), () => client.resetAndDestroy());
    expect((await ending).how).toBe("ECONNRESET");
    expect((await closed).complete).toBe(false);
  });

  it("lets go of a client that resets while its target does not read (its socket was not being read), and resets the target", async () => {
    const { client, target, closed } = await proxied();
    target.pause(); // takes nothing: the client's bytes fill every buffer up to the join, which stops reading
    client.on("error", () => undefined);
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < 64; i++) client.write(chunk);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(client.writableLength).toBeGreaterThan(0); // stalled
    const started = performance.now();
    client.resetAndDestroy();
    const outcome = await closed;
    expect(outcome).toMatchObject({ complete: false, cutBy: "a" });
    expect(performance.now() - started).toBeLessThan(3 * stallProbeMs);
    target.resume(); // the target's own socket (paused by this test) now reads what was carried, then the RST
    expect((await watchEnding(target)).how).toBe("ECONNRESET");
  }, 30_000);

  it("lets go of a TLS client that resets while its target does not read, through the TCP socket under it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "join-tls-stall-"));
    const [proxyUpstream, target] = await pair();
    target.pause(); // takes nothing: the client's bytes fill every buffer up to the join, which stops reading
    target.on("error", () => undefined);
    try {
      const ca = { certFile: join(dir, "ca.crt"), keyFile: join(dir, "ca.key") };
      await createCertificateAuthority({ ...ca, name: "join-streams test" });
      const server = { certFile: join(dir, "s.crt"), keyFile: join(dir, "s.key") };
      await issueCertificate({ ...server, caCertFile: ca.certFile, caKeyFile: ca.keyFile, commonName: "localhost", hosts: ["127.0.0.1"] });
      let closed!: Promise<JoinOutcome>;
      const tlsServer = createTlsServer({ cert: readFileSync(server.certFile), key: readFileSync(server.keyFile), allowHalfOpen: true });
      const served = new Promise<void>((resolve) => {
        tlsServer.once("secureConnection", (session: TLSSocket) => {
          closed = new Promise<JoinOutcome>((settle) => joinStreams(session, proxyUpstream, { onClose: settle }));
          resolve();
        });
      });
      await new Promise<void>((resolve) => tlsServer.listen(0, "127.0.0.1", resolve));
      const tcp = connectTcp({ host: "127.0.0.1", port: (tlsServer.address() as { port: number }).port });
      tcp.on("error", () => undefined);
      const client = tlsConnect({ socket: tcp, ca: readFileSync(ca.certFile), servername: "localhost" });
      client.on("error", () => undefined);
      await new Promise((resolve) => client.once("secureConnect", resolve));
      await served;
      const chunk = Buffer.alloc(1 << 20);
      for (let i = 0; i < 64; i++) client.write(chunk);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(client.writableLength).toBeGreaterThan(0); // stalled
      tcp.resetAndDestroy();
      tlsServer.close();
      expect(await closed).toMatchObject({ complete: false, cutBy: "a" });
      target.resume();
      expect((await watchEnding(target)).how).toBe("ECONNRESET");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it("resets the upstream at once, without throwing, when the client is already gone", async () => {
    const [client, proxyClient] = await pair();
    const [proxyUpstream, target] = await pair();
    const ending = watchEnding(target);
    proxyClient.on("error", () => undefined);
    client.resetAndDestroy();
    await new Promise((resolve) => proxyClient.once("close", resolve));
    const outcome = await new Promise<JoinOutcome>((resolve) => joinStreams(proxyClient, proxyUpstream, { onClose: resolve }));
    expect(outcome).toMatchObject({ complete: false, cutBy: "a" });
    expect((await ending).how).toBe("ECONNRESET");
  });

  it("resets the client when a Duplex upstream (a tunnel stream) is destroyed with an error, and destroys it with an error when the client resets", async () => {
    const tunnelLike = () => new Duplex({ read() {}, write(_chunk, _encoding, callback) { callback(); } });
    {
      const [client, proxyClient] = await pair();
      const upstream = tunnelLike();
      const ending = watchEnding(client);
      joinStreams(proxyClient, upstream);
      upstream.push(randomBytes(1000));
      upstream.destroy(new Error("stream reset by the far end"));
      const seen = await ending;
      expect(seen.how).toBe("ECONNRESET");
      expect(seen.bytes).toBeLessThanOrEqual(1000);
    }
    {
      const [client, proxyClient] = await pair();
      const upstream = tunnelLike();
      const destroyed = new Promise<Error | null>((resolve) => upstream.once("close", () => resolve(upstream.errored)));
      joinStreams(proxyClient, upstream);
      client.resetAndDestroy();
      expect(await destroyed).toBeInstanceOf(Error);
    }
  });

  it("resets both sides on reset() (an idle timeout)", async () => {
    const { client, target, join } = await proxied();
    const endings = [watchEnding(client), watchEnding(target)];
    join.reset(new Error("idle timeout"));
    expect((await Promise.all(endings)).map((ending) => ending.how)).toEqual(["ECONNRESET", "ECONNRESET"]);
  });
});

describe("resetStream", () => {
  it("resets a TLS socket's TCP connection: the far end sees ECONNRESET, not a clean end, and the socket closes", async () => {
    const dir = mkdtempSync(join(tmpdir(), "join-tls-"));
    try {
      const ca = { certFile: join(dir, "ca.crt"), keyFile: join(dir, "ca.key") };
      await createCertificateAuthority({ ...ca, name: "join-streams test" });
      const server = { certFile: join(dir, "s.crt"), keyFile: join(dir, "s.key") };
      await issueCertificate({ ...server, caCertFile: ca.certFile, caKeyFile: ca.keyFile, commonName: "localhost", hosts: ["127.0.0.1"] });
      const serverSide: TLSSocket[] = [];
      const tlsServer = createTlsServer({ cert: readFileSync(server.certFile), key: readFileSync(server.keyFile) }, (socket) => {
        socket.on("error", () => undefined);
        serverSide.push(socket);
        socket.write("hello");
      });
      await new Promise<void>((resolve) => tlsServer.listen(0, "127.0.0.1", resolve));
      const client = tlsConnect({ port: (tlsServer.address() as { port: number }).port, host: "127.0.0.1", ca: readFileSync(ca.certFile) });
      client.resume(); // read everything, so that a clean end would show as 'end'
      const seen = new Promise<string>((resolve) => {
        client.once("end", () => resolve("end"));
        client.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
      });
      await expect.poll(() => serverSide.length).toBe(1);
      // and the reset socket closes (a raw reset of the handle under its net.Socket left it without 'close' for good)
      const closed = new Promise<string>((resolve) => {
        serverSide[0].once("close", () => resolve("closed"));
        setTimeout(() => resolve("no close within 3 s"), 3_000);
      });
      resetStream(serverSide[0], new Error("cut"));
      expect(await seen).toBe("ECONNRESET");
      expect(await closed).toBe("closed");
      tlsServer.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("closes a socket whose end() is still shutting down: no RST is possible then, and none is tried (its handle would leak)", async () => {
    const pairs = await loopbackPairs();
    try {
      const [client, server] = await pairs.pair();
      const clientEnding = watchEnding(client);
      const errors: string[] = [];
      server.on("error", (error: NodeJS.ErrnoException) => errors.push(error.code ? `${error.code} ${error.syscall}` : error.message));
      const handlesBefore = process.getActiveResourcesInfo().filter((kind) => kind === "TCPSocketWrap").length;
      server.end("last words"); // the shutdown goes out at once: nothing was queued
      resetStream(server, new Error("cut"));
      const closed = await new Promise((resolve) => {
        server.once("close", () => resolve("closed"));
        setTimeout(() => resolve("no close within 3 s"), 3_000);
      });
      expect(errors).toEqual(["cut"]); // resetAndDestroy here failed with "EINVAL reset" and left the handle open, never closed
      expect(closed).toBe("closed");
      expect(await clientEnding).toEqual({ bytes: 10, how: "end" });
      client.destroy();
      await new Promise((resolve) => client.once("close", resolve));
      expect(process.getActiveResourcesInfo().filter((kind) => kind === "TCPSocketWrap").length).toBe(handlesBefore - 2);
    } finally {
      pairs.close();
    }
  });

  it("hands its error to a stream nobody listens to without an unhandled 'error' (a late tunnel stream reset on arrival)", async () => {
    const stream = new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback() });
    resetStream(stream, new Error("the client left before the stream opened"));
    await new Promise((resolve) => stream.once("close", resolve));
    expect(stream.errored?.message).toBe("the client left before the stream opened");
  });
});
