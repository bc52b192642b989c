/**
 * What a backend may send that the gateway cannot pass on: a raw h2c server on loopback (frames written by hand, as
 * a broken or hostile backend writes them) answering `:status: 600`, which nghttp2 takes (three digits) and Node's
 * HTTP/2 server refuses to write, and an HTTP/1.1 server answering `HTTP/1.1 600` or `099`, which llhttp takes.
 * The gateway answers 502, holds it against the endpoint, and lives on.
 */
import { connect, type ClientHttp2Session } from "node:http2";
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { catalogFeed, prefixRoutes, type PrefixBackend } from "../../test/support/gateway-fixture.ts";
import { freePort } from "../../test/support/ports.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";
import { frame, rawHttp2Server } from "../../test/support/http2-frames.ts";

/**
 * An h2c server that answers every request with a HEADERS frame ending its stream: `:status` as a literal with the
 * static table's name (index 8, RFC 7541 §6.2.2), whatever three characters `status` holds.
 */
function oddStatusServer(status: string, sockets: Set<Socket>): TcpServer {
  return rawHttp2Server((socket, stream) => socket.write(frame(1, 0x05, stream, Buffer.concat([Buffer.from([0x08, status.length]), Buffer.from(status)]))), sockets);
}

/** An HTTP/1.1 server that answers each connection's first request with `status` and closes. */
function rawHttp1Server(status: string, sockets: Set<Socket>): TcpServer {
  return createTcpServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => undefined);
    socket.once("data", () => socket.end(`HTTP/1.1 ${status} Odd\r\nContent-Length: 2\r\n\r\nok`));
  });
}

describe("backends answering a status no HTTP server may send", () => {
  const sockets = new Set<Socket>();
  const backends: TcpServer[] = [];
  let gateway: GatewayActor;
  let gatewayPort = 0;
  let client: ClientHttp2Session;

  beforeAll(async () => {
    gatewayPort = await freePort();
    const routed: PrefixBackend[] = [];
    // A Service per backend, its path prefix its name: h2 (grpc port), h1-600 and h1-099 (http ports).
    for (const [name, portName, backend] of [["h2", "grpc", oddStatusServer("600", sockets)], ["h1-600", "http", rawHttp1Server("600", sockets)], ["h1-099", "http", rawHttp1Server("099", sockets)]] as const) {
      const port = await freePort();
      backends.push(backend);
      await new Promise<void>((resolve) => backend.listen(port, "127.0.0.1", resolve));
      routed.push({ name, portName, port });
    }
    const feed = catalogFeed(prefixRoutes(gatewayPort, routed, "198.19.81"));
    gateway = createGatewayActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: () => undefined });
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

  const http2Status = async (path: string) => {
    const stream = client.request({ ":path": path }, { endStream: true });
    stream.resume();
    return new Promise<unknown>((resolve) => {
      stream.on("response", (headers) => resolve(headers[":status"]));
      stream.on("error", (error: Error) => resolve(`error: ${error.message}`));
    });
  };

  it("answers 502 for an HTTP/2 backend's status 600, to an HTTP/2 client (its server refuses it; thrown, it ended the process) and an HTTP/1.1 one", async () => {
    expect(await http2Status("/h2/x")).toBe(502);
    expect((await fetch(`http://127.0.0.1:${gatewayPort}/h2/x`)).status).toBe(502);
  });

  it("answers 502 for an HTTP/1.1 backend's status 600 or 099, where an HTTP/2 client's stream was reset and an HTTP/1.1 client got it as sent", async () => {
    for (const name of ["h1-600", "h1-099"]) {
      expect(await http2Status(`/${name}/x`)).toBe(502);
      expect((await fetch(`http://127.0.0.1:${gatewayPort}/${name}/x`)).status).toBe(502);
    }
  });
});
