/**
 * readExactly, the wait for a stream's header or status: it ends when the stream does, however it ends. A stream
 * destroyed without an error says only 'close', and a wait that heard only 'end' and 'error' held its timer and the
 * stream for the whole header timeout (10 s in an agent): after a loaded churn run, an agent still held such a wait.
 * A TLS carrier reset because its client left (join-streams.ts resetStream) errs, and ended the wait before too;
 * it is kept here so that it stays so.
 */
import { Duplex } from "node:stream";
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resetStream } from "../../lib/join-streams.ts";
import { selfSignedCertificate } from "../../test/support/certificates.ts";
import { readExactly, readHeader } from "./stream-header.ts";

/** Long enough that a test ending before it shows the wait ended with its stream, not with its timer. */
const longWait = 120_000;

/** A stream nobody feeds but the test (push), that takes every write. */
const idleDuplex = () => new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback() });

function outcome(waiting: Promise<unknown>): Promise<string> {
  return waiting.then(
    (value) => `read ${String(value)}`,
    (error: Error) => `failed: ${error.message}`,
  );
}

describe("readExactly", () => {
  it("reads what it was asked for, across chunks", async () => {
    const stream = idleDuplex();
    const waiting = readExactly(stream, 4, longWait);
    stream.push(Buffer.from("ab"));
    stream.push(Buffer.from("cdef"));
    expect((await waiting).toString()).toBe("abcd");
    stream.destroy();
  });

  it("fails at once when its stream is destroyed without an error (its timer goes with it)", async () => {
    const stream = idleDuplex();
    const waiting = outcome(readExactly(stream, 2, longWait));
    stream.push(Buffer.from("a"));
    stream.destroy();
    expect(await waiting).toMatch(/failed: tunnel stream closed before its header/);
  });

  it("fails with the stream's error, and on a clean end before enough bytes", async () => {
    const errored = idleDuplex();
    const first = outcome(readExactly(errored, 2, longWait));
    errored.destroy(new Error("cut"));
    expect(await first).toBe("failed: cut");
    const ended = idleDuplex();
    const second = outcome(readExactly(ended, 2, longWait));
    ended.push(Buffer.from("a"));
    ended.push(null);
    expect(await second).toBe("failed: tunnel stream ended after 1 of a header's 2 bytes");
  });

  it("a header wait says a stream closed before its first byte never started", async () => {
    const stream = idleDuplex();
    const waiting = outcome(readHeader(stream, longWait));
    stream.destroy();
    expect(await waiting).toBe("failed: the carrier closed before a stream header began");
  });
});

describe("readExactly on a TLS carrier reset because its client left", () => {
  let server: ReturnType<typeof createTlsServer>;
  const serverSide: TLSSocket[] = [];
  const pair = selfSignedCertificate(["127.0.0.1"]);

  beforeAll(async () => {
    // A far agent that never answers the header: it reads and says nothing.
    server = createTlsServer({ cert: pair.cert, key: pair.key }, (socket) => {
      socket.on("error", () => undefined);
      socket.resume();
      serverSide.push(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });

  afterAll(() => {
    for (const socket of serverSide) socket.destroy();
    server?.close();
  });

  it("fails at once, not after the header timeout", async () => {
    const client = tlsConnect({ port: (server.address() as { port: number }).port, host: "127.0.0.1", ca: pair.cert });
    client.on("error", () => undefined);
    await new Promise((resolve) => client.once("secureConnect", resolve));
    client.write("a target header");
    const waiting = outcome(readExactly(client, 1, longWait));
    resetStream(client, new Error("the client left"));
    expect(await waiting).toMatch(/^failed: /);
    await new Promise((resolve) => (client.closed ? resolve(undefined) : client.once("close", resolve)));
  });
});
