/**
 * The backends of test/support/gateway-manifests.ts's routes, as real servers:
 * each HTTP backend answers its own name ("api\n") with `x-backend` and the
 * Host and path it saw; `flaky` answers 503 to every other request (a retry
 * succeeds); `slow` answers after 1 s (past its route's 300 ms timeout); `echo`
 * is a TCP echo; `tls-pass` an HTTPS server with its own certificate for
 * pass.example.com (passthrough: the client sees the backend's certificate);
 * `grpc` an h2c server in gRPC's manner (each request's bytes echoed after its
 * name as they come, `grpc-status: 0` in the trailers); `live` a WebSocket
 * server (`ws`: @kubernetes/client-node's dependency) that greets with its
 * name and echoes each message.
 * Backend i listens on basePort + i (basePort 0: each on a port of the kernel's choice). Run in-process, or as a program in a lab
 * namespace: `node test/support/gateway-backends.ts HOST BASEPORT [NAME-SUFFIX]`.
 *
 * ```ts
 * const backends = await startGatewayBackends({ host: "127.0.0.1", basePort: 21000 });
 * backendManifests(backends.endpoints("edge-b"));
 * await backends.close();
 * ```
 */
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { createServer as createHttp2Server, type Http2Server, type Http2Session } from "node:http2";
import { createServer, type Server } from "node:net";
import type { Duplex } from "node:stream";
import { backendServices, type BackendEndpoint, type BackendService } from "./gateway-manifests.ts";
import { selfSignedCertificate } from "./certificates.ts";
import { ws } from "./ws.ts";

export interface GatewayBackends {
  ports: Record<BackendService, number>;
  /** TCP connections each backend accepted so far. */
  connections: Record<BackendService, number>;
  endpoints(node?: string, ip?: string): Partial<Record<BackendService, BackendEndpoint[]>>;
  close(): Promise<void>;
}

export async function startGatewayBackends(options: { host: string; basePort: number; suffix?: string }): Promise<GatewayBackends> {
  const servers: (Server | HttpServer | Http2Server)[] = [];
  const sessions = new Set<Http2Session>();
  const ports = {} as Record<BackendService, number>;
  const connections = Object.fromEntries(backendServices.map((name) => [name, 0])) as Record<BackendService, number>;
  for (const [index, name] of backendServices.entries()) {
    const port = options.basePort === 0 ? 0 : options.basePort + index;
    const label = `${name}${options.suffix ?? ""}`;
    let server: Server | HttpServer | Http2Server;
    if (name === "grpc") {
      server = grpcServer(label);
      // An HTTP/2 server's close waits for its sessions, which a gateway keeps open: they are ended with it.
      server.on("session", (session: Http2Session) => {
        sessions.add(session);
        session.on("close", () => sessions.delete(session));
      });
    } else if (name === "live") server = webSocketServer(label);
    else if (name === "echo") {
      server = createServer({ allowHalfOpen: true }, (socket) => {
        socket.on("error", () => undefined);
        socket.pipe(socket);
      });
    } else if (name === "tls-pass") {
      const pair = selfSignedCertificate(["pass.example.com"]);
      server = createHttpsServer({ key: pair.key, cert: pair.cert }, (request, response) => response.end(`${label}\n`));
    } else {
      let requests = 0;
      server = createHttpServer((request, response) => {
        requests++;
        const reply = () => {
          response.writeHead(200, { "x-backend": label, "x-seen-host": request.headers.host ?? "", "x-seen-path": request.url ?? "", "x-seen-forwarded-for": String(request.headers["x-forwarded-for"] ?? ""), "x-seen-forwarded-proto": String(request.headers["x-forwarded-proto"] ?? "") });
          response.end(`${label}\n`);
        };
        if (name === "flaky" && requests % 2 === 1) {
          response.writeHead(503);
          response.end("try again\n");
        } else if (name === "slow") setTimeout(reply, 1_000);
        else if (request.method === "POST") {
          // Echo the body's length: a request body streamed through whole.
          let length = 0;
          request.on("data", (chunk: Buffer) => (length += chunk.length));
          request.on("end", () => response.end(`${label} got ${length} bytes\n`));
        } else reply();
      });
    }
    server.on("connection", () => connections[name]++);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, options.host, () => resolve());
    });
    const address = server.address();
    ports[name] = typeof address === "object" && address ? address.port : port;
    servers.push(server);
  }
  return {
    ports,
    connections,
    endpoints: (node, ip = options.host) => Object.fromEntries(backendServices.map((name) => [name, [{ ip, port: ports[name], ...(node ? { node } : {}) }]])),
    close: async () => {
      for (const session of sessions) session.destroy();
      for (const server of servers) {
        (server as HttpServer).closeAllConnections?.();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    },
  };
}

function grpcServer(label: string): Http2Server {
  const server = createHttp2Server();
  server.on("stream", (stream) => {
    stream.on("error", () => undefined);
    stream.respond({ ":status": 200, "content-type": "application/grpc", "x-backend": label }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "grpc-message": label }));
    stream.write(`${label}:`);
    stream.on("data", (chunk: Buffer) => stream.write(chunk));
    stream.on("end", () => stream.end());
  });
  return server;
}

function webSocketServer(label: string): HttpServer {
  const sessions = new ws.WebSocketServer({ noServer: true });
  const server = createHttpServer((_request, response) => response.end(`${label}\n`));
  server.on("upgrade", (request, socket: Duplex, head: Buffer) => {
    socket.on("error", () => undefined);
    sessions.handleUpgrade(request, socket, head, (session) => {
      session.on("error", () => undefined);
      session.on("message", (data) => session.send(`${label} ${data.toString()}`));
      session.send(label);
    });
  });
  return server;
}

// As a program (in a lab namespace): serve until killed.
if (process.argv[1]?.endsWith("gateway-backends.ts") && process.argv.length >= 4) {
  const [host, basePort, suffix] = process.argv.slice(2);
  await startGatewayBackends({ host, basePort: Number(basePort), suffix });
  process.stdout.write("ready\n");
}
