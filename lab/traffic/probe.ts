/**
 * A lab client: opens connections (or UDP flows) to host:port and prints which
 * endpoint answered, as JSON: { answers: { s1: 100, ... }, errors: { ECONNRESET: 1 } }.
 *
 *   node probe.ts --host 198.19.0.10 --port 80 --count 300 [--udp] [--from 198.18.1.100,198.18.1.101]
 *                 [--hold]   (keep every connection open until all answered: concurrent load)
 *                 [--timeout-ms 3000] [--sport N]   (UDP: send from this source port)
 *                 [--connect]   (UDP: a connected socket, as resolvers use: an ICMP port unreachable is then ECONNREFUSED)
 */
import { createSocket } from "node:dgram";
import { connect, type Socket } from "node:net";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    host: { type: "string" },
    port: { type: "string" },
    count: { type: "string" },
    udp: { type: "boolean" },
    hold: { type: "boolean" },
    from: { type: "string" },
    "timeout-ms": { type: "string" },
    sport: { type: "string" },
    connect: { type: "boolean" },
  },
});
const host = values.host!;
const port = Number(values.port);
const count = Number(values.count ?? 1);
const sources = values.from ? values.from.split(",") : [undefined];
const timeoutMs = Number(values["timeout-ms"] ?? 3000);
const answers: Record<string, number> = {};
const errors: Record<string, number> = {};
const bySource: Record<string, Record<string, number>> = {};
const held: Socket[] = [];

function record(source: string | undefined, answer: string | undefined, error?: string) {
  if (answer) {
    answers[answer] = (answers[answer] ?? 0) + 1;
    const key = source ?? "default";
    bySource[key] ??= {};
    bySource[key][answer] = (bySource[key][answer] ?? 0) + 1;
  } else errors[error ?? "unknown"] = (errors[error ?? "unknown"] ?? 0) + 1;
}

function tcpOnce(source: string | undefined): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, localAddress: source, allowHalfOpen: true });
    let text = "";
    let done = false;
    const finish = (answer?: string, error?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      record(source, answer, error);
      if (values.hold && answer) {
        held.push(socket);
        resolve();
      } else if (answer) {
        // A graceful close (FIN, the endpoint's "bye", its FIN), so the proxy has let go of
        // this connection before the next one: the loads the policies see are then exact.
        socket.removeAllListeners("data");
        socket.on("data", () => undefined);
        socket.once("close", () => resolve());
        socket.end();
      } else {
        socket.destroy();
        resolve();
      }
    };
    const timer = setTimeout(() => finish(undefined, "timeout"), timeoutMs);
    socket.on("data", (data) => {
      text += data.toString();
      if (text.includes("\n")) finish(text.split("\n")[0]);
    });
    socket.on("error", (error: NodeJS.ErrnoException) => finish(undefined, error.code ?? error.message));
    socket.on("close", () => finish(undefined, "closed without answer"));
  });
}

/**
 * UDP sockets kept open until the probe ends, so that every probe is a flow of its own: a socket closed at once let
 * the kernel give its port to the next one, whose datagram then belonged to the earlier flow (11/10/9 where round
 * robin gives 10/10/10). With --sport every probe is meant to be the same flow, and closes to free the port.
 */
const udpHeld: ReturnType<typeof createSocket>[] = [];

function udpOnce(source: string | undefined, i: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = createSocket("udp4");
    const done = () => {
      if (values.sport === undefined) udpHeld.push(socket);
      else socket.close();
      resolve();
    };
    const timer = setTimeout(() => {
      record(source, undefined, "timeout");
      done();
    }, timeoutMs);
    socket.on("message", (message) => {
      clearTimeout(timer);
      const [name, ...rest] = message.toString().split(":");
      record(source, rest.join(":") === `probe ${i}` ? name : undefined, "wrong payload");
      done();
    });
    // A refusal comes as ICMP port unreachable (a connected socket's ECONNREFUSED) or, where this host's own
    // OUTPUT chain rejects the datagram, as the send's EPERM.
    let failed = false;
    const fail = (error: NodeJS.ErrnoException | null) => {
      if (!error || failed) return;
      failed = true;
      clearTimeout(timer);
      record(source, undefined, error.code ?? error.message);
      done();
    };
    socket.on("error", fail);
    socket.bind(Number(values.sport ?? 0), source, () => {
      if (values.connect) socket.connect(port, host, () => socket.send(`probe ${i}`, fail));
      else socket.send(`probe ${i}`, port, host, fail);
    });
  });
}

if (values.hold) {
  // One after another, each kept open, so least-connections sees every earlier one still active.
  for (let i = 0; i < count; i++) await tcpOnce(sources[i % sources.length]);
} else {
  for (let i = 0; i < count; i++) {
    const source = sources[i % sources.length];
    await (values.udp ? udpOnce(source, i) : tcpOnce(source));
  }
}
for (const socket of held) socket.destroy();
for (const socket of udpHeld) socket.close();
process.stdout.write(`${JSON.stringify({ answers, errors, bySource })}\n`);
