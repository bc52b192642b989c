/**
 * Benchmark client, run inside the client namespace:
 *   rr-client.ts latency --host H --port P --count N   small request/response round trips on one connection
 *   rr-client.ts connect --host H --port P --ms T      new connections per second (connect, read greeting, close)
 * Prints JSON: { samplesUs: [...] } or { connections, ms }.
 * The server is lab/traffic/endpoint-server.ts: a greeting line, then echo.
 */
import { connect, type Socket } from "node:net";
import { parseArgs } from "node:util";

const { positionals, values } = parseArgs({ allowPositionals: true, options: { host: { type: "string" }, port: { type: "string" }, count: { type: "string" }, ms: { type: "string" }, concurrency: { type: "string" } } });
const host = values.host!;
const port = Number(values.port);

function open(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true });
    socket.once("error", reject);
    socket.once("data", () => resolve(socket)); // the greeting
    // A proxy that closes before the greeting (a bare pipe() whose upstream failed passes it on as a FIN) is a failure, not a wait forever.
    socket.once("close", () => reject(new Error("closed before the greeting")));
  });
}

if (positionals[0] === "latency") {
  const count = Number(values.count ?? 2000);
  const socket = await open();
  const request = Buffer.alloc(64, 0x61);
  const samplesUs: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = process.hrtime.bigint();
    await new Promise<void>((resolve) => {
      let received = 0;
      const onData = (data: Buffer) => {
        received += data.length;
        if (received >= request.length) {
          socket.off("data", onData);
          resolve();
        }
      };
      socket.on("data", onData);
      socket.write(request);
    });
    samplesUs.push(Number(process.hrtime.bigint() - started) / 1000);
  }
  socket.destroy();
  process.stdout.write(`${JSON.stringify({ samplesUs })}\n`);
} else {
  const ms = Number(values.ms ?? 2000);
  const concurrency = Number(values.concurrency ?? 8);
  const deadline = Date.now() + ms;
  let connections = 0;
  let failures = 0;
  const worker = async () => {
    while (Date.now() < deadline) {
      try {
        const socket = await open();
        socket.destroy();
        connections++;
      } catch {
        failures++;
      }
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  process.stdout.write(`${JSON.stringify({ connections, failures, ms: Date.now() - started })}\n`);
}
