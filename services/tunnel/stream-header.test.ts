/**
 * readExactly, the wait for a stream's header or status: it ends when the stream does, however it ends. A TLS
 * carrier reset because its client left (join-streams.ts resetStream) closes without 'end' or 'error' here, and a
 * wait that heard only those held its timer and the stream for the whole header timeout (10 s in an agent): a
 * loaded churn run counted that timer as held after the churn.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Duplex } from "node:stream";
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resetStream } from "../../lib/join-streams.ts";
import { createCertificateAuthority, issueCertificate } from "../../trust/tls.ts";
import { readExactly, readHeader } from "./stream-header.ts";

/** Long enough that a test ending before it shows the wait ended with its stream, not with its timer. */
const longWait = 120_000;

function outcome(waiting: Promise<unknown>): Promise<string> {
  return waiting.then(
    (value) => `read ${String(value)}`,
    (error: Error) => `failed: ${error.message}`,
  );
}

describe("readExactly", () => {
  it("reads what it was asked for, across chunks", async () => {
    const stream = new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback() });
    const waiting = readExactly(stream, 4, longWait);
    stream.push(Buffer.from("ab"));
    stream.push(Buffer.from("cdef"));
    expect((await waiting).toString()).toBe("abcd");
    stream.destroy();
  });

  it("fails at once when its stream is destroyed without an error (its timer goes with it)", async () => {
    const stream = new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback() });
    const waiting = outcome(readExactly(stream, 2, longWait));
    stream.push(Buffer.from("a"));
    stream.destroy();
    expect(await waiting).toMatch(/failed: tunnel stream closed before its header/);
  });

  it("fails with the stream's error, and on a clean end before enough bytes", async () => {
    const errored = new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback() });
    const first = outcome(readExactly(errored, 2, longWait));
    errored.destroy(new Error("cut"));
    expect(await first).toBe("failed: cut");
    const ended = new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback() });
    const second = outcome(readExactly(ended, 2, longWait));
    ended.push(Buffer.from("a"));
    ended.push(null);
    expect(await second).toBe("failed: tunnel stream ended after 1 of a header's 2 bytes");
  });

  it("a header wait says a stream closed before its first byte never started", async () => {
    const stream = new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback() });
    const waiting = outcome(readHeader(stream, longWait));
    stream.destroy();
    expect(await waiting).toBe("failed: the carrier closed before a stream header began");
  });
});

describe("readExactly on a TLS carrier reset because its client left", () => {
  let dir: string;
  let server: ReturnType<typeof createTlsServer>;
  let ca: Buffer;
  const serverSide: TLSSocket[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "stream-header-"));
    const caFiles = { certFile: join(dir, "ca.crt"), keyFile: join(dir, "ca.key") };
    await createCertificateAuthority({ ...caFiles, name: "stream-header test" });
    const leaf = { certFile: join(dir, "s.crt"), keyFile: join(dir, "s.key") };
    await issueCertificate({ ...leaf, caCertFile: caFiles.certFile, caKeyFile: caFiles.keyFile, commonName: "localhost", hosts: ["127.0.0.1"] });
    ca = readFileSync(caFiles.certFile);
    // A far agent that never answers the header: it reads and says nothing.
    server = createTlsServer({ cert: readFileSync(leaf.certFile), key: readFileSync(leaf.keyFile) }, (socket) => {
      socket.on("error", () => undefined);
      socket.resume();
      serverSide.push(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });

  afterAll(() => {
    for (const socket of serverSide) socket.destroy();
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("fails at once, not after the header timeout", async () => {
    const client = tlsConnect({ port: (server.address() as { port: number }).port, host: "127.0.0.1", ca });
    client.on("error", () => undefined);
    await new Promise((resolve) => client.once("secureConnect", resolve));
    client.write("a target header");
    const waiting = outcome(readExactly(client, 1, longWait));
    resetStream(client, new Error("the client left"));
    expect(await waiting).toMatch(/^failed: /);
    await new Promise((resolve) => (client.closed ? resolve(undefined) : client.once("close", resolve)));
  });
});
