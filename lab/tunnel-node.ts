/**
 * A process the NAT lab runs inside a namespace: either the hub's NAT observer
 * or a tunnel agent. An agent connects to the leaf nats-server next to it,
 * serves an echo on 127.0.0.1:7007 (the target of test streams) and takes JSON
 * commands on stdin, one per line, answering one JSON line on stdout each.
 *
 *   node lab/tunnel-node.ts observer '{"hosts":["198.18.64.1","198.18.64.2"],"ports":[3478,3479]}'
 *   node lab/tunnel-node.ts agent '{"node":"s1h1","natsUrl":"nats://127.0.0.1:4222","psk":"...","observer":{...}}'
 *   stdin:  {"id":1,"op":"roundtrip","node":"s2h1","bytes":1048576}
 *   stdout: {"id":1,"ok":true,"kind":"hole-punched","ms":41}
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import type { Duplex } from "node:stream";
import { Bus } from "../bus/bus.ts";
import { connectNats } from "../bus/connect.ts";
import { describeError } from "../lib/errors.ts";
import { createLogger } from "../lib/log.ts";
import { createTunnelActor, startObserver, type ObserverAddress } from "../services/tunnel/index.ts";

export const echoPort = 7007;

const [mode, configText] = process.argv.slice(2);
const config = JSON.parse(configText ?? "{}") as Record<string, unknown>;
const log = createLogger({ level: process.env.LEAFMESH_LOG_LEVEL ?? "warn" }).child({ node: config.node ?? mode });
const reply = (message: unknown) => process.stdout.write(`${JSON.stringify(message)}\n`);

function roundTrip(stream: Duplex, payload: Buffer): Promise<{ bytes: Buffer; firstByteMs: number }> {
  const started = performance.now();
  let firstByteMs = -1;
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    stream.on("data", (chunk: Buffer) => {
      if (firstByteMs < 0) firstByteMs = performance.now() - started;
      chunks.push(chunk);
    });
    stream.once("end", () => resolve({ bytes: Buffer.concat(chunks), firstByteMs }));
    stream.once("error", reject);
    stream.end(payload);
  });
}

const sha = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

if (mode === "observer") {
  await startObserver({ hosts: config.hosts as [string, string], ports: config.ports as [number, number], log });
  reply({ event: "ready" });
} else if (mode === "agent") {
  const echo = createServer((socket) => {
    socket.on("error", () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => echo.listen(echoPort, "127.0.0.1", resolve));
  const node = config.node as string;
  // The leaf nats-server next to us may still be starting: bounded retries.
  let nats: Awaited<ReturnType<typeof connectNats>> | undefined;
  for (let attempt = 0; attempt < 60 && !nats; attempt++) {
    nats = await connectNats({ servers: [config.natsUrl as string], name: `lab agent ${node}` }).catch(async () => {
      await new Promise((resolve) => setTimeout(resolve, 250));
      return undefined;
    });
  }
  if (!nats) throw new Error(`${node}: leaf nats-server at ${config.natsUrl as string} never answered`);
  const bus = new Bus({ connection: nats, node, log });
  const tunnel = createTunnelActor({
    bus,
    log,
    node,
    nats,
    listen: ["/ip4/0.0.0.0/tcp/4101"],
    psk: config.psk as string,
    observer: config.observer as ObserverAddress | undefined,
    site: config.site as string | undefined,
    recordRefreshMs: 1_000,
    upgradeIntervalMs: 3_000,
    backoffMinMs: 500,
    backoffMaxMs: 4_000,
  });
  await tunnel.start();
  reply({ event: "ready" });
  createInterface({ input: process.stdin }).on("line", (line) => {
    void (async () => {
      let request: { id: number; op: string; node?: string; bytes?: number };
      try {
        request = JSON.parse(line) as typeof request;
      } catch {
        return;
      }
      try {
        switch (request.op) {
          case "status":
            return reply({ id: request.id, ok: true, nat: tunnel.nat, records: tunnel.directory?.all().map((record) => record.node) ?? [] });
          case "path":
            return reply({ id: request.id, ok: true, kind: tunnel.pathTo(request.node!) ?? null, detail: tunnel.pathDetail(request.node!), connections: tunnel.connectionsTo(request.node!).map((entry) => entry.kind) });
          case "roundtrip": {
            const payload = randomBytes(request.bytes ?? 65_536);
            const started = performance.now();
            const stream = await tunnel.openStream(request.node!, { host: "127.0.0.1", port: echoPort, protocol: "TCP" });
            const openedMs = performance.now() - started;
            const { bytes, firstByteMs } = await roundTrip(stream, payload);
            return reply({
              id: request.id,
              ok: sha(bytes) === sha(payload),
              length: bytes.byteLength,
              kind: tunnel.pathTo(request.node!),
              ms: performance.now() - started,
              openedMs,
              firstByteMs,
            });
          }
          case "stop":
            await tunnel.stop();
            await nats.close();
            reply({ id: request.id, ok: true });
            process.exit(0);
        }
        reply({ id: request.id, ok: false, error: `unknown op ${request.op}` });
      } catch (error) {
        reply({ id: request.id, ok: false, error: describeError(error) });
      }
    })();
  });
} else {
  console.error("usage: node lab/tunnel-node.ts observer|agent '<json config>'");
  process.exit(2);
}
