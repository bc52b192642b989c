/**
 * The relayed path's ceiling in the tunnel benchmark: Node's own TLS 1.3 (the
 * node's certificate) over plain NATS pub/sub on the same leaf → hub → leaf path,
 * with no leafmesh code between them — no relay frames, sequence numbers, credit,
 * pings, budget or path choice. Each TLS write is published as it is (no copy
 * into a frame) and each message pushed to TLS as it arrives; the only flow
 * control is the plain NATS baseline's: a flush (a round trip to the leaf server)
 * after every MiB sent. The receiving end joins the TLS socket to the local sink
 * with the agent's own splice (lib/join-streams.ts), as a relayed stream's target
 * is. What any Node process pays to carry a TCP stream encrypted over NATS.
 *
 * ```ts
 * serveTlsOverNats(nats, "rbh1", identity, [sinkPort, echoPort]);             // on the receiving node
 * const socket = await openTlsOverNats(nats, "rah1", "rbh1", sinkPort, identity); // on the sender: a TLS socket
 * ```
 */
import { randomBytes } from "node:crypto";
import { connect as netConnect } from "node:net";
import { Duplex } from "node:stream";
import { TLSSocket, connect as tlsConnect, type ConnectionOptions } from "node:tls";
import type { NatsConnection } from "@nats-io/transport-node";
import { joinStreams } from "../lib/join-streams.ts";
import type { NodeIdentity } from "../services/tunnel/index.ts";

const flushEveryBytes = 1024 * 1024;

/** A byte stream over two NATS subjects: writes published to `sendTo`, messages on `receiveOn` read; an empty message ends it. */
class NatsDuplex extends Duplex {
  readonly #nats: NatsConnection;
  readonly #sendTo: string;
  #unflushed = 0;
  #subscription;

  constructor(nats: NatsConnection, sendTo: string, receiveOn: string) {
    super({ allowHalfOpen: true });
    this.#nats = nats;
    this.#sendTo = sendTo;
    this.#subscription = nats.subscribe(receiveOn, {
      callback: (_, message) => {
        if (message.data.byteLength === 0) this.push(null);
        else this.push(message.data);
      },
    });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#nats.publish(this.#sendTo, chunk);
    this.#unflushed += chunk.byteLength;
    if (this.#unflushed < flushEveryBytes) return callback();
    this.#unflushed = 0;
    this.#nats.flush().then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#nats.publish(this.#sendTo, new Uint8Array(0));
    callback();
  }

  override _read(): void {}

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#subscription.unsubscribe();
    callback(error);
  }
}

const openSubject = (node: string) => `bench.${node}.tls-nats.open`;
const dataSubject = (node: string, id: string) => `bench.${node}.tls-nats.${id}`;

/** The receiving node: each stream opened to it is TLS-terminated and joined to 127.0.0.1 at the port asked for, one of `targets`. */
export function serveTlsOverNats(nats: NatsConnection, node: string, identity: NodeIdentity, targets: number[]): void {
  nats.subscribe(openSubject(node), {
    callback: (_, message) => {
      const { id, from, port } = JSON.parse(new TextDecoder().decode(message.data)) as { id: string; from: string; port: number };
      if (!targets.includes(port) || !/^[0-9a-f]{12}$/.test(id) || !/^[a-z0-9-]+$/.test(from)) return;
      const carrier = new NatsDuplex(nats, dataSubject(from, id), dataSubject(node, id));
      // Mutual, as leafmesh's relayed TLS streams are: the client's certificate asked for and checked against the mesh CA.
      const socket = new TLSSocket(carrier, { isServer: true, cert: identity.certPem, key: identity.keyPem, ca: identity.caPem, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3", allowHalfOpen: true } as ConstructorParameters<typeof TLSSocket>[1]);
      socket.on("error", () => carrier.destroy());
      const local = netConnect({ host: "127.0.0.1", port, noDelay: true });
      joinStreams(socket, local);
      // Subscribed before the answer: the client's first flight cannot arrive unheard.
      void nats.flush().then(() => message.respond(new Uint8Array([1])));
    },
  });
}

/** The sending node: a TLS 1.3 client socket over NATS to `to`'s serveTlsOverNats. */
export async function openTlsOverNats(nats: NatsConnection, from: string, to: string, port: number, identity: NodeIdentity): Promise<TLSSocket> {
  const id = randomBytes(6).toString("hex");
  const carrier = new NatsDuplex(nats, dataSubject(to, id), dataSubject(from, id));
  await nats.flush();
  await nats.request(openSubject(to), new TextEncoder().encode(JSON.stringify({ id, from, port })), { timeout: 10_000 });
  return new Promise((resolve, reject) => {
    // The node's own certificate presented, the server's checked against the mesh CA: the handshake leafmesh pays
    // (its name check, a string compare, left out). allowHalfOpen reaches the TLSSocket though the typings omit it
    // (as in services/tunnel/tls-streams.ts).
    const options: ConnectionOptions & { allowHalfOpen: boolean } = { socket: carrier, cert: identity.certPem, key: identity.keyPem, ca: identity.caPem, rejectUnauthorized: true, checkServerIdentity: () => undefined, minVersion: "TLSv1.3", allowHalfOpen: true };
    const socket = tlsConnect(options);
    socket.setNoDelay(true);
    socket.once("secureConnect", () => resolve(socket));
    socket.once("error", reject);
  });
}
