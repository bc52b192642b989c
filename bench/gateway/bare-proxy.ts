/**
 * The floors of the gateway benchmark's HTTP row: the least an HTTP proxy in
 * Node does, measured in the same run as the gateway and haproxy, so the table
 * says how much of the gap is Node's and how much the gateway's.
 *
 * Both route as the benchmark's routes do (Host shop.example.com with a path
 * under /api/ → api, anything else → web), keep connections to the backends
 * alive (one request at a time each, an idle pool), write the request head as
 * one string and read the answer with the gateway's own parser
 * (services/gateway/http1-codec.ts). Nothing else: no balancing, timeouts,
 * retries, access log, metrics or status, and no HTTP/1.1 edge cases beyond
 * what wrk sends (no request bodies, no pipelining).
 *
 * - `node-http`: Node's HTTP server on the client side (an IncomingMessage and
 *   a ServerResponse per request), as the gateway ran before its own front end.
 * - `llhttp`: Node's parser (llhttp) driven directly on the accepted socket's
 *   handle, as Node's own server drives it, without the request and response
 *   objects; the answer's head and body go out in one write.
 *
 *   node bench/gateway/bare-proxy.ts node-http|llhttp PORT API-PORT WEB-PORT
 * prints "listening" once the port listens.
 */
import { createServer as createHttpServer } from "node:http";
import { HTTPParser, methods } from "node:_http_common";
import { connect, createServer, type Socket } from "node:net";
import { requestHead, ResponseParser } from "../../services/gateway/http1-codec.ts";
import { endToEnd, hopByHop, setByGateway } from "../../services/gateway/http-message.ts";

type Answer = (status: number, headers: string[], body: Buffer[]) => void;

const [mode, portText, apiText, webText] = process.argv.slice(2);
if ((mode !== "node-http" && mode !== "llhttp") || !portText || !apiText || !webText) {
  console.error("usage: bare-proxy.ts node-http|llhttp PORT API-PORT WEB-PORT");
  process.exit(2);
}
const backends = { api: Number(apiText), web: Number(webText) };
const idle = new Map<number, Socket[]>([
  [backends.api, []],
  [backends.web, []],
]);

function backendOf(host: string | undefined, url: string): number {
  return host === "shop.example.com" && url.startsWith("/api/") ? backends.api : backends.web;
}

function dial(port: number): Socket {
  const socket = connect({ port, host: "127.0.0.1", noDelay: true });
  // A backend that fails is not measured here: the connection goes (out of the pool too), the run shows errors.
  socket.on("error", () => socket.destroy());
  socket.on("close", () => {
    const pool = idle.get(port)!;
    const at = pool.indexOf(socket);
    if (at >= 0) pool.splice(at, 1);
  });
  return socket;
}

/** One request to a backend on a kept-alive connection; the answer whole (the benchmark's answers are a few bytes). */
function forward(port: number, method: string, url: string, host: string | undefined, raw: readonly string[], answer: Answer): void {
  const socket = idle.get(port)!.pop() ?? dial(port);
  const body: Buffer[] = [];
  let status = 502;
  let headers: string[] = [];
  const parser = new ResponseParser({
    head: method === "HEAD",
    onHead: (head) => {
      status = head.status;
      headers = head.headers;
    },
    onBody: (chunk) => body.push(chunk),
    onEnd: () => {
      socket.off("data", onData);
      idle.get(port)!.push(socket);
      answer(status, headers, body);
    },
  });
  const onData = (chunk: Buffer) => parser.feed(chunk);
  socket.on("data", onData);
  // The gateway's own header rules (http-message.ts), without Connection's named headers: wrk names none.
  const out = endToEnd(raw, setByGateway, undefined);
  out.push("host", host ?? "", "x-forwarded-for", "127.0.0.1", "x-forwarded-proto", "http", "connection", "keep-alive");
  socket.write(requestHead(method, url, out), "latin1");
}

function hostOf(raw: readonly string[]): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i].length === 4 && raw[i].toLowerCase() === "host") return raw[i + 1];
  return undefined;
}

const server =
  mode === "node-http"
    ? createHttpServer({ noDelay: true }, (request, response) => {
        const url = request.url ?? "/";
        forward(backendOf(request.headers.host, url), request.method ?? "GET", url, request.headers.host, request.rawHeaders, (status, headers, body) => {
          response.writeHead(status, endToEnd(headers, hopByHop, undefined));
          response.end(body.length === 1 ? body[0] : Buffer.concat(body));
        });
      })
    : createServer({ noDelay: true }, (socket) => {
        const parser = new HTTPParser();
        parser.initialize(HTTPParser.REQUEST, {}, 0, 0);
        let request: { method: string; url: string; headers: string[] } | undefined;
        parser[HTTPParser.kOnHeadersComplete] = (_major: number, _minor: number, headers: string[], method: number, url: string) => {
          request = { method: methods[method], url, headers };
          return 0;
        };
        parser[HTTPParser.kOnBody] = () => undefined;
        parser[HTTPParser.kOnMessageComplete] = () => {
          const { method, url, headers } = request!;
          const host = hostOf(headers);
          forward(backendOf(host, url), method, url, host, headers, (status, answerHeaders, body) => {
            let head = `HTTP/1.1 ${status} \r\n`;
            const out = endToEnd(answerHeaders, hopByHop, undefined);
            for (let i = 0; i < out.length; i += 2) head += `${out[i]}: ${out[i + 1]}\r\n`;
            socket.cork();
            socket.write(`${head}\r\n`, "latin1");
            for (const chunk of body) socket.write(chunk);
            socket.uncork();
          });
        };
        parser[HTTPParser.kOnExecute] = (result: number | Error) => {
          if (result instanceof Error) socket.destroy();
        };
        parser.consume((socket as Socket & { _handle: object })._handle);
        socket.on("error", () => socket.destroy());
        socket.on("close", () => parser.unconsume());
      });
server.listen(Number(portText), "127.0.0.1", () => console.log("listening"));
