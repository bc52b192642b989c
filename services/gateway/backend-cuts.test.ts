/**
 * Backends that stop an answer part-way, and one that stops only after its answer is whole, behind one gateway, to
 * an HTTP/2 client and an HTTP/1.1 one. Raw h2c backends (frames written by hand): one that resets its stream with
 * RST_STREAM(NO_ERROR) after the answer's first bytes and before its END_STREAM, one that does so before any answer,
 * and one whose RST_STREAM(NO_ERROR) follows a whole answer (RFC 9113 §8.1: "stop sending the request body", a
 * success). Node's HTTP/2 client gives an RST_STREAM(NO_ERROR) the same events as a real end: the unfinished answer
 * reached the client as a clean end. And raw HTTP/1.1 backends that close short of their Content-Length or of their
 * chunked body's last chunk. An unfinished answer must end in an error at the client: an HTTP/2 stream reset with an
 * error code, an HTTP/1.1 connection reset without the last chunk.
 */
import { connect, constants, type ClientHttp2Session } from "node:http2";
import { connect as connectTcp, createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { frame, rawHttp2Server, resetFrame } from "../../test/support/http2-frames.ts";
import { catalogFeed, prefixRoutes, type PrefixBackend } from "../../test/support/gateway-fixture.ts";
import { freePort } from "../../test/support/ports.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";
import type { AccessEntry } from "./http-proxy.ts";

/** HEADERS with `:status: 200` (the static table's index 8, RFC 7541 §6.1), END_HEADERS, not END_STREAM. */
const answerHead = (stream: number) => frame(1, 0x04, stream, Buffer.from([0x88]));
const data = (stream: number, text: string, endStream: boolean) => frame(0, endStream ? 0x01 : 0, stream, Buffer.from(text));

/** What each h2c backend sends for every request: a Service per behaviour, its route's path prefix its name. */
const http2Backends: Record<string, (stream: number) => Buffer[]> = {
  "h2-cut": (stream) => [answerHead(stream), data(stream, "part", false), resetFrame(stream, constants.NGHTTP2_NO_ERROR)],
  "h2-unanswered": (stream) => [resetFrame(stream, constants.NGHTTP2_NO_ERROR)],
  "h2-whole": (stream) => [answerHead(stream), data(stream, "whole", true), resetFrame(stream, constants.NGHTTP2_NO_ERROR)],
};
/** What each HTTP/1.1 backend sends before its FIN. */
const http1Backends: Record<string, string> = {
  "h1-short": "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart",
  "h1-chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n",
};

describe("backends that stop an answer part-way", () => {
  const sockets = new Set<Socket>();
  const backends: TcpServer[] = [];
  const access: AccessEntry[] = [];
  let gateway: GatewayActor;
  let gatewayPort = 0;
  let client: ClientHttp2Session;

  beforeAll(async () => {
    gatewayPort = await freePort();
    const servers: [string, string, TcpServer][] = [
      ...Object.entries(http2Backends).map(([name, frames]): [string, string, TcpServer] => [name, "grpc", rawHttp2Server((socket, stream) => socket.write(Buffer.concat(frames(stream))), sockets)]),
      ...Object.entries(http1Backends).map(([name, answer]): [string, string, TcpServer] => [name, "http", createTcpServer((socket) => (sockets.add(socket), socket.on("error", () => undefined), socket.once("data", () => socket.end(answer))))]),
    ];
    const routed: PrefixBackend[] = [];
    for (const [name, portName, backend] of servers) {
      const port = await freePort();
      backends.push(backend);
      await new Promise<void>((resolve) => backend.listen(port, "127.0.0.1", resolve));
      routed.push({ name, portName, port });
    }
    const feed = catalogFeed(prefixRoutes(gatewayPort, routed, "198.19.83"));
    gateway = createGatewayActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: (entry) => entry.kind === "http" && access.push(entry) });
    await gateway.start();
    client = connect(`http://127.0.0.1:${gatewayPort}`);
    client.on("error", () => undefined);
  }, 30_000);

  afterAll(async () => {
    client?.close();
    await gateway?.stop();
    for (const socket of sockets) socket.destroy();
    for (const backend of backends) await new Promise((resolve) => backend.close(resolve));
  });

  /** One request over HTTP/2: its status, body, how it ended (and the reset's code), its access-log line. `body`: sent, and the request left open. */
  async function http2Request(path: string, body?: string) {
    const stream = client.request({ ":method": body === undefined ? "GET" : "POST", ":path": path }, { endStream: body === undefined });
    if (body !== undefined) stream.write(body);
    let status = 0;
    let text = "";
    stream.on("response", (headers) => (status = Number(headers[":status"])));
    stream.on("data", (chunk: Buffer) => (text += chunk.toString()));
    const ending = await new Promise<string>((resolve) => {
      stream.on("end", () => resolve("end"));
      stream.on("error", (error: Error) => resolve(`error: ${error.message}`));
    });
    if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
    await new Promise((resolve) => setTimeout(resolve, 20)); // the access line is written as the exchange settles
    return { status, body: text, ending, rstCode: stream.rstCode, entry: access.findLast((entry) => entry.path === path && entry.protocol === "HTTP/2.0") };
  }

  /** One GET over HTTP/1.1 on a connection of its own (Connection: close): the bytes read, and whether it was reset. */
  function http1Request(path: string): Promise<{ text: string; reset: boolean; entry?: AccessEntry }> {
    return new Promise((resolve) => {
      const socket = connectTcp(gatewayPort, "127.0.0.1");
      let text = "";
      let reset = false;
      socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")));
      socket.on("error", () => (reset = true));
      socket.on("close", () => setTimeout(() => resolve({ text, reset, entry: access.findLast((entry) => entry.path === path && entry.protocol === "HTTP/1.1") }), 20));
      socket.write(`GET ${path} HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n`);
    });
  }

  it("resets an HTTP/2 client's stream, and an HTTP/1.1 client's connection before its last chunk, when an h2c backend resets with NO_ERROR before its END_STREAM", async () => {
    const cutBefore = gateway.stats().counters["http answer cut by backend"] ?? 0;
    const http2 = await http2Request("/h2-cut/Get");
    expect(http2).toMatchObject({ status: 200, body: "part", ending: expect.stringMatching(/^error/), rstCode: constants.NGHTTP2_INTERNAL_ERROR });
    expect(http2.entry).toMatchObject({ status: 200, reason: "answer cut by backend" });
    const http1 = await http1Request("/h2-cut/Get");
    expect(http1.text).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*transfer-encoding: chunked/i);
    expect(http1.text).not.toContain("\r\n0\r\n\r\n");
    expect(http1.reset).toBe(true);
    expect(http1.entry).toMatchObject({ status: 200, reason: "answer cut by backend" });
    expect(gateway.stats().counters["http answer cut by backend"] ?? 0).toBe(cutBefore + 2);
  });

  it("answers 502 when an h2c backend resets with NO_ERROR before any answer, not an empty 200", async () => {
    const http2 = await http2Request("/h2-unanswered/Get");
    expect(http2).toMatchObject({ status: 502, ending: "end" });
    expect((await http1Request("/h2-unanswered/Get")).text).toMatch(/^HTTP\/1\.1 502 /);
    expect(gateway.stats().counters["http backend failed"]).toBeGreaterThanOrEqual(2);
  });

  it("passes a whole answer on as whole when the backend's RST_STREAM(NO_ERROR) follows its END_STREAM (stop sending the body: RFC 9113 §8.1)", async () => {
    const http2 = await http2Request("/h2-whole/Post", "a body the backend does not want");
    expect(http2).toMatchObject({ status: 200, body: "whole", ending: "end" });
    expect(http2.entry).toMatchObject({ status: 200 });
    expect(http2.entry?.reason).toBeUndefined();
    const http1 = await http1Request("/h2-whole/Get");
    expect(http1.text).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*\r\n5\r\nwhole\r\n0\r\n\r\n$/i);
    expect(http1.reset).toBe(false);
  });

  it("cuts the client's answer when an HTTP/1.1 backend closes short of its Content-Length or of its last chunk", async () => {
    for (const name of Object.keys(http1Backends)) {
      const http2 = await http2Request(`/${name}/Get`);
      expect(http2, name).toMatchObject({ status: 200, ending: expect.stringMatching(/^error/), rstCode: constants.NGHTTP2_INTERNAL_ERROR });
      expect(http2.entry, name).toMatchObject({ status: 200, reason: "answer cut by backend" });
      const http1 = await http1Request(`/${name}/Get`);
      expect(http1.text, name).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(http1.text, name).not.toContain("\r\n0\r\n\r\n");
      expect(http1.reset, name).toBe(true);
    }
  });
});
