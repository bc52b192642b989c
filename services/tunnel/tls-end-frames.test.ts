/**
 * End frames (lib/end-frames.ts) over real TLS stream sessions (tls-streams.ts)
 * on loopback: negotiated by ALPN, carried both ways whatever the writes, and a
 * FIN without the end frame (what a crashed agent's kernel sends) read as an
 * error. A TCP relay in between stands for the network, and cuts it with a FIN.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { endFramesProtocol, frameEnds, framesEnds, sessionFramesEnds } from "../../lib/end-frames.ts";
import { joinStreams } from "../../lib/join-streams.ts";
import { readBufferStats } from "../../lib/read-buffers.ts";
import { silentLogger } from "../../lib/log.ts";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { loadNodeSecurity, nodeIdentityPems } from "../../trust/security.ts";
import type { NodeIdentity } from "./node-identity.ts";
import { encodeHeader, requestTarget, statusOk } from "./stream-header.ts";
import { StreamServer } from "./stream-server.ts";
import { connectTlsStream, startTlsStreamServer, type TlsStreamServer } from "./tls-streams.ts";

const base = mkdtempSync(join(tmpdir(), "leafmesh-end-frames-"));
const identities: Record<string, NodeIdentity> = {};
let server: TlsStreamServer;
/** What the next served session does: set by each test. */
let serve: (socket: TLSSocket) => void = (socket) => socket.destroy();

beforeAll(async () => {
  const keys = join(base, "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) {
    await issueNode({ dir: keys, node });
    identities[node] = nodeIdentityPems(loadNodeSecurity(keys, node));
  }
  server = await startTlsStreamServer({ identity: identities["edge-b"], listen: { host: "127.0.0.1", port: 0 }, log: silentLogger(), onStream: (socket) => serve(socket) });
}, 30_000);

afterAll(async () => {
  await server?.close();
  rmSync(base, { recursive: true, force: true });
});

const sha = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

/** Everything a socket reads, and how it ended: "end", or its error's message. */
function readAll(socket: TLSSocket): Promise<{ bytes: Buffer; how: string }> {
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve) => {
    socket.once("end", () => resolve({ bytes: Buffer.concat(chunks), how: "end" }));
    socket.once("error", (error) => resolve({ bytes: Buffer.concat(chunks), how: error.message }));
  });
}

/**
 * A TCP relay to the stream server that, once `cutAfter` bytes of the server's came through, ends the client's
 * side with a FIN and drops the server's. Before that, either side's reset or error destroys the other, and a
 * client that closes takes its upstream along; close() destroys what is still open.
 */
async function startRelay(cutAfter: number): Promise<{ port: number; close(): void }> {
  const open = new Set<Socket>();
  const relay: Server = createServer({ allowHalfOpen: true }, (client: Socket) => {
    const upstream = netConnect({ host: "127.0.0.1", port: server.port, allowHalfOpen: true });
    for (const socket of [client, upstream]) {
      open.add(socket);
      socket.once("close", () => open.delete(socket));
    }
    let carried = 0;
    client.on("error", () => upstream.destroy());
    // A client gone without an error (the test destroyed it) takes its upstream with it, not only at close().
    client.once("close", () => upstream.destroy());
    upstream.on("error", () => carried < cutAfter && client.destroy());
    client.pipe(upstream);
    upstream.on("data", (chunk: Buffer) => {
      if (carried >= cutAfter) return;
      carried += chunk.length;
      client.write(chunk);
      // The far agent's process is gone: its kernel's FIN, no close_notify, nothing more.
      if (carried >= cutAfter) {
        client.end();
        upstream.destroy();
      }
    });
    upstream.on("end", () => client.end());
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
  return {
    port: (relay.address() as { port: number }).port,
    close: () => {
      relay.close();
      for (const socket of open) socket.destroy();
    },
  };
}

const dial = (port = server.port) => connectTlsStream({ identity: identities["edge-a"], node: "edge-b", host: "127.0.0.1", port, timeoutMs: 5_000 });

describe("end frames over TLS stream sessions", () => {
  it("are agreed by ALPN when both ends offer them; a peer that does not offer them gets none", async () => {
    const served = new Promise<TLSSocket>((resolve) => (serve = resolve));
    const client = await dial();
    expect(client.alpnProtocol).toBe(endFramesProtocol);
    expect(sessionFramesEnds(client)).toBe(true);
    expect(sessionFramesEnds(await served)).toBe(true);
    client.destroy();

    // A node of an earlier release offers no ALPN protocol: its session is served, unframed.
    const servedOld = new Promise<TLSSocket>((resolve) => (serve = resolve));
    const old = tlsConnect({ host: "127.0.0.1", port: server.port, cert: identities["edge-a"].certPem, key: identities["edge-a"].keyPem, ca: identities["edge-a"].caPem, checkServerIdentity: () => undefined });
    await new Promise((resolve) => old.once("secureConnect", resolve));
    expect(old.alpnProtocol).toBe(false);
    expect(sessionFramesEnds(await servedOld)).toBe(false);
    old.destroy();
  });

  it("frame a stream only when both ends offered them: an opener of an earlier release reads and writes the bytes as they are", async () => {
    const echo = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("data", (chunk: Buffer) => socket.write(chunk));
      socket.once("end", () => socket.end());
    });
    await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
    const streams = new StreamServer({ node: "edge-b", log: silentLogger() });
    serve = (socket) => void streams.serve(socket, "edge-a");
    const target = { host: "127.0.0.1", port: (echo.address() as { port: number }).port, protocol: "TCP" as const };
    const payload = randomBytes(300_000);
    try {
      // This release: the target header, the status, then frames both ways; requestTarget's stream reads plain bytes.
      const framed = await requestTarget(await dial(), target, { timeoutMs: 5_000, peer: "edge-b", log: silentLogger() });
      expect(framesEnds(framed)).toBe(true);
      const back = readAll(framed as TLSSocket);
      framed.end(payload);
      const echoed = await back;
      expect(echoed.how).toBe("end");
      expect(sha(echoed.bytes)).toBe(sha(payload));

      // An earlier release: no ALPN, so no frames either way (a framed server would send a header first and wait for one).
      const old = tlsConnect({ host: "127.0.0.1", port: server.port, cert: identities["edge-a"].certPem, key: identities["edge-a"].keyPem, ca: identities["edge-a"].caPem, checkServerIdentity: () => undefined, allowHalfOpen: true } as ConnectionOptions);
      await new Promise((resolve) => old.once("secureConnect", resolve));
      const answer = readAll(old);
      old.write(encodeHeader(target));
      old.end(payload);
      const { bytes, how } = await answer;
      expect(how).toBe("end");
      expect(bytes[0]).toBe(statusOk);
      const statusBytes = 3 + bytes.readUInt16BE(1);
      expect(bytes.subarray(statusBytes).equals(payload)).toBe(true);
    } finally {
      echo.close();
    }
  });

  it("carry every kind of write both ways, whole, and an end as an end", async () => {
    const reply = randomBytes(3 * 1024 * 1024 + 7);
    const served = new Promise<{ bytes: Buffer; how: string }>((resolve) => {
      serve = (socket) => {
        frameEnds(socket);
        void readAll(socket).then((result) => {
          socket.end(reply);
          resolve(result);
        });
      };
    });
    const client = await dial();
    frameEnds(client);
    const answer = readAll(client);
    const small = randomBytes(10);
    const large = randomBytes(100_000);
    const batch = [randomBytes(3), randomBytes(20_000), randomBytes(1)];
    client.write(small);
    client.write(large);
    client.write(Buffer.alloc(0));
    // Corked: one _writev of several chunks.
    client.cork();
    for (const chunk of batch) client.write(chunk);
    process.nextTick(() => client.uncork());
    client.write("text, as a string");
    client.end();
    const there = await served;
    expect(there.how).toBe("end");
    expect(sha(there.bytes)).toBe(sha(Buffer.concat([small, large, ...batch, Buffer.from("text, as a string")])));
    const back = await answer;
    expect(back.how).toBe("end");
    expect(sha(back.bytes)).toBe(sha(reply));
  });

  it("read a FIN without the end frame as an error: unframed, the same cut reads as an end", async () => {
    const relay = await startRelay(1024 * 1024);
    try {
      const source = (socket: TLSSocket) => {
        socket.on("error", () => undefined);
        const chunk = randomBytes(64 * 1024);
        const pump = () => {
          while (!socket.destroyed && socket.write(chunk));
          if (!socket.destroyed) socket.once("drain", pump);
        };
        pump();
      };
      serve = (socket) => (frameEnds(socket), source(socket));
      const framed = await dial(relay.port);
      frameEnds(framed);
      const cut = await readAll(framed);
      expect(cut.how).toMatch(/ended without its end frame/);
      expect(cut.bytes.length).toBeGreaterThan(0);

      // The same cut of a session without end frames: Node's TLS reads it as an end. This is what end frames are for.
      serve = source;
      const unframed = await dial(relay.port);
      expect((await readAll(unframed)).how).toBe("end");
    } finally {
      relay.close();
    }
  });

  it("are stripped by a join that reads the session into a buffer of its own, and its end passes as an end", async () => {
    const payload = randomBytes(16 * 1024 * 1024);
    const sink = createServer({ allowHalfOpen: true });
    const received = new Promise<{ bytes: Buffer; how: string }>((resolve) =>
      sink.once("connection", (socket: Socket) => {
        const chunks: Buffer[] = [];
        socket.on("data", (chunk: Buffer) => chunks.push(chunk));
        socket.once("end", () => (resolve({ bytes: Buffer.concat(chunks), how: "end" }), socket.end()));
        socket.once("error", (error) => resolve({ bytes: Buffer.concat(chunks), how: error.message }));
      }),
    );
    await new Promise<void>((resolve) => sink.listen(0, "127.0.0.1", resolve));
    try {
      const switchedBefore = readBufferStats().directionsSwitched;
      serve = (socket) => {
        frameEnds(socket);
        const target = netConnect({ host: "127.0.0.1", port: (sink.address() as { port: number }).port, allowHalfOpen: true });
        target.once("connect", () => joinStreams(socket, target));
      };
      const client = await dial();
      frameEnds(client);
      client.on("error", () => undefined);
      for (let offset = 0; offset < payload.length; offset += 256 * 1024) {
        if (!client.write(payload.subarray(offset, offset + 256 * 1024))) await new Promise((resolve) => client.once("drain", resolve));
      }
      client.end();
      const result = await received;
      expect(result.how).toBe("end");
      expect(sha(result.bytes)).toBe(sha(payload));
      expect(readBufferStats().directionsSwitched).toBeGreaterThan(switchedBefore);
      client.destroy();
    } finally {
      sink.close();
    }
  });
});
