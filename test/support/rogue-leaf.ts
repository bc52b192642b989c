/**
 * Test support: a "stolen node" that speaks the leafnode protocol itself with a
 * node's valid credentials and certificate, without any of the restrictions an
 * honest leaf server applies (docs/nats-facts.md: a client like this got past per-user
 * permissions on 2.9.10). What it can reach is what the hub's accounts allow.
 */
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { connect as tcpConnect } from "node:net";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { parseCreds, fromSeed } from "@nats-io/jwt";

export interface RogueLeaf {
  publish(subject: string, payload: string, reply?: string): void;
  /**
   * A message for the named queue groups (`LMSG <subject> + <reply> <queue>… <size>`): a server delivers a message
   * from a leaf to queue subscribers only of the groups it names (the sending server picked them), so without this a
   * queue subscriber (a hub's service) never hears it.
   */
  publishToQueues(subject: string, queues: string[], payload: string, reply?: string): void;
  /** A message with NATS headers (`HMSG` on a leaf connection), e.g. `{ "Nats-Rollup": "all" }`. */
  publishWithHeaders(subject: string, headers: Record<string, string>, payload: string, reply?: string): void;
  subscribe(subject: string): void;
  unsubscribe(subject: string): void;
  /** Messages received so far: subject, reply subject, headers (raw block) and payload. */
  received: { subject: string; reply?: string; headers?: string; payload: string }[];
  /** Resolves once the hub has answered a PING sent after everything written so far. */
  flush(): Promise<void>;
  /** Protocol errors and lines the hub sent (-ERR ...). */
  errors: string[];
  closed: Promise<void>;
  close(): void;
}

export async function connectRogueLeaf(options: {
  port: number;
  /** @default 127.0.0.1 */
  host?: string;
  creds: string;
  cert: string;
  key: string;
  ca: string;
  /** Fields added to (or replacing those of) its CONNECT: e.g. `{ hub: true }` or a JetStream `domain`. */
  connect?: Record<string, unknown>;
}): Promise<RogueLeaf> {
  const creds = await parseCreds(readFileSync(options.creds));
  // nats-server 2.9 sends INFO in plaintext first, then expects the TLS handshake.
  const plain = tcpConnect({ host: options.host ?? "127.0.0.1", port: options.port });
  const infoLine = await new Promise<string>((resolve, reject) => {
    let text = "";
    plain.once("error", reject);
    const onData = (chunk: Buffer) => {
      text += chunk.toString("latin1");
      const end = text.indexOf("\r\n");
      if (end >= 0) {
        plain.off("data", onData);
        plain.pause();
        resolve(text.slice(0, end));
      }
    };
    plain.on("data", onData);
  });
  const { nonce } = JSON.parse(infoLine.slice("INFO ".length)) as { nonce?: string };
  const socket: TLSSocket = tlsConnect({ socket: plain, cert: readFileSync(options.cert), key: readFileSync(options.key), ca: readFileSync(options.ca), servername: "localhost" });
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", () => resolve());
    socket.once("error", reject);
  });
  const received: RogueLeaf["received"] = [];
  const errors: string[] = [];
  let buffer = "";
  let pendingMessage: { subject: string; reply?: string; headerSize: number; size: number } | undefined;
  const pongWaiters: (() => void)[] = [];
  const pong = new Promise<void>((resolve) => pongWaiters.push(resolve));
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.on("error", (error) => errors.push(error.message));
  socket.on("data", (chunk: Buffer) => {
    buffer += chunk.toString("latin1");
    for (;;) {
      if (pendingMessage) {
        if (buffer.length < pendingMessage.size + 2) return;
        const body = buffer.slice(0, pendingMessage.size);
        const { subject, reply, headerSize } = pendingMessage;
        received.push({ subject, ...(reply ? { reply } : {}), ...(headerSize > 0 ? { headers: body.slice(0, headerSize) } : {}), payload: body.slice(headerSize) });
        buffer = buffer.slice(pendingMessage.size + 2);
        pendingMessage = undefined;
        continue;
      }
      const end = buffer.indexOf("\r\n");
      if (end < 0) return;
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (line.startsWith("INFO ")) continue;
      else if (line === "PING") socket.write("PONG\r\n");
      else if (line === "PONG") pongWaiters.shift()?.();
      else if (line.startsWith("-ERR")) errors.push(line);
      else if (line.startsWith("LMSG ")) {
        // LMSG <subject> [<reply>] <size>
        const tokens = line.split(" ");
        pendingMessage = { subject: tokens[1], reply: tokens.length === 4 ? tokens[2] : undefined, headerSize: 0, size: Number(tokens[tokens.length - 1]) };
      } else if (line.startsWith("HMSG ")) {
        // HMSG <subject> [<reply>] <header size> <total size>
        const tokens = line.split(" ");
        pendingMessage = { subject: tokens[1], reply: tokens.length === 5 ? tokens[2] : undefined, headerSize: Number(tokens[tokens.length - 2]), size: Number(tokens[tokens.length - 1]) };
      }
    }
  });
  // A name of its own per connection: a hub closes a second leaf connection of one account with the same server name.
  const signature = Buffer.from(fromSeed(new TextEncoder().encode(creds.key)).sign(new TextEncoder().encode(nonce ?? ""))).toString("base64url");
  socket.write(`CONNECT ${JSON.stringify({ jwt: creds.jwt, sig: signature, tls_required: true, name: `rogue-${randomBytes(4).toString("hex")}`, headers: true, hub: false, ...options.connect })}\r\nPING\r\n`);
  await Promise.race([pong, closed]);
  return {
    received,
    errors,
    closed,
    publish(subject, payload, reply) {
      socket.write(`LMSG ${subject}${reply ? ` ${reply}` : ""} ${Buffer.byteLength(payload)}\r\n${payload}\r\n`);
    },
    publishToQueues(subject, queues, payload, reply) {
      socket.write(`LMSG ${subject} ${reply ? `+ ${reply}` : "|"} ${queues.join(" ")} ${Buffer.byteLength(payload)}\r\n${payload}\r\n`);
    },
    publishWithHeaders(subject, headers, payload, reply) {
      const block = `NATS/1.0\r\n${Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("")}\r\n`;
      const headerSize = Buffer.byteLength(block);
      socket.write(`HMSG ${subject}${reply ? ` ${reply}` : ""} ${headerSize} ${headerSize + Buffer.byteLength(payload)}\r\n${block}${payload}\r\n`);
    },
    subscribe(subject) {
      socket.write(`LS+ ${subject}\r\n`);
    },
    unsubscribe(subject) {
      socket.write(`LS- ${subject}\r\n`);
    },
    flush() {
      const answered = new Promise<void>((resolve) => pongWaiters.push(resolve));
      socket.write("PING\r\n");
      return Promise.race([answered, closed]);
    },
    close() {
      socket.destroy();
    },
  };
}
