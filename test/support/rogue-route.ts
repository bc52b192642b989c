/**
 * Test support: a client that speaks the route protocol to a server's cluster port with a
 * certificate it holds (a stolen node's), as a cluster member would: TLS first, then CONNECT and
 * INFO, then `RS+ <account> <subject>` to take an account's messages (`RMSG`). Not used by the product.
 */
import { connect as tlsConnect } from "node:tls";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";

export interface RogueRoute {
  /** Everything the server sent, as text. */
  text(): string;
  subscribe(account: string, subject: string): void;
  /** Resolves when the server closed the connection (or at once if it is closed). */
  closed: Promise<void>;
  close(): void;
}

export async function connectRogueRoute(options: { port: number; cert: string; key: string; ca: string; cluster: string; user?: string; password?: string }): Promise<RogueRoute> {
  const socket = tlsConnect({ host: "127.0.0.1", port: options.port, cert: readFileSync(options.cert), key: readFileSync(options.key), ca: readFileSync(options.ca), rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", () => resolve());
    socket.once("error", reject);
  });
  let received = "";
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.on("error", () => undefined);
  socket.on("data", (chunk: Buffer) => {
    received += chunk.toString("latin1");
    if (received.endsWith("PING\r\n")) socket.write("PONG\r\n");
  });
  const id = `NROGUE${randomBytes(8).toString("hex").toUpperCase()}`;
  socket.write(`CONNECT ${JSON.stringify({ echo: false, verbose: false, pedantic: false, tls_required: true, headers: true, name: id, cluster: options.cluster, dynamic: false, lnoc: true, user: options.user ?? "", pass: options.password ?? "" })}\r\n`);
  socket.write(`INFO ${JSON.stringify({ server_id: id, server_name: "rogue", cluster: options.cluster, headers: true, lnoc: true, host: "127.0.0.1", port: 1 })}\r\nPING\r\n`);
  return {
    text: () => received,
    subscribe(account, subject) {
      socket.write(`RS+ ${account} ${subject}\r\n`);
    },
    closed,
    close() {
      socket.destroy();
    },
  };
}
