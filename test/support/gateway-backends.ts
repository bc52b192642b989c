/**
 * The backends of test/support/gateway-manifests.ts's routes, as real servers:
 * each HTTP backend answers its own name ("api\n") with `x-backend` and the
 * Host and path it saw; `flaky` answers 503 to every other request (a retry
 * succeeds); `slow` answers after 1 s (past its route's 300 ms timeout); `echo`
 * is a TCP echo; `tls-pass` an HTTPS server with its own certificate for
 * pass.example.com (passthrough: the client sees the backend's certificate).
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
import { createServer, type Server } from "node:net";
import { backendServices, type BackendEndpoint, type BackendService } from "./gateway-manifests.ts";
import { selfSignedCertificate } from "./certificates.ts";

export interface GatewayBackends {
  ports: Record<BackendService, number>;
  /** TCP connections each backend accepted so far. */
  connections: Record<BackendService, number>;
  endpoints(node?: string, ip?: string): Partial<Record<BackendService, BackendEndpoint[]>>;
  close(): Promise<void>;
}

export async function startGatewayBackends(options: { host: string; basePort: number; suffix?: string }): Promise<GatewayBackends> {
  const servers: (Server | HttpServer)[] = [];
  const ports = {} as Record<BackendService, number>;
  const connections = Object.fromEntries(backendServices.map((name) => [name, 0])) as Record<BackendService, number>;
  for (const [index, name] of backendServices.entries()) {
    const port = options.basePort === 0 ? 0 : options.basePort + index;
    const label = `${name}${options.suffix ?? ""}`;
    let server: Server | HttpServer;
    if (name === "echo") {
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
      for (const server of servers) {
        (server as HttpServer).closeAllConnections?.();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    },
  };
}

// As a program (in a lab namespace): serve until killed.
if (process.argv[1]?.endsWith("gateway-backends.ts") && process.argv.length >= 4) {
  const [host, basePort, suffix] = process.argv.slice(2);
  await startGatewayBackends({ host, basePort: Number(basePort), suffix });
  process.stdout.write("ready\n");
}
