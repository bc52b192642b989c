/**
 * A new direct or hole-punched libp2p connection must carry full-sized packets before a
 * path rests on it. A path MTU black hole (a PPPoE or tunnel link of smaller MTU on the way,
 * whose ICMP "fragmentation needed" a router or firewall drops) passes the TCP handshake,
 * noise, multistream and pings, which are all small, and swallows every full-sized segment:
 * probed with a 1400-byte link between two nodes, the path was "direct" at once and every
 * stream on it failed after 10 s, for ever, since the dial that made the path kept working
 * and the relay was never tried.
 *
 * So the side that made a connection (it dialled, or punched outbound) sends 8 KiB on
 * `/leafmesh/path-check/1.0.0` (several full-sized segments at any MTU) and needs it echoed
 * within 6 s; a connection that fails is aborted with the reason, and the path falls on to
 * the next way (hole punch, relay). The other side counts a connection as carrying once the
 * whole 8 KiB arrived. Until then the connection holds no path on either side
 * (connections.ts `ranked` leaves it out). A peer that does not speak the protocol (an older
 * agent) is taken as it was before: unchecked.
 *
 * ```ts
 * const checks = new PathChecks({ host, log, onCarried: (connection) => paths.carried(connection) });
 * await checks.start();
 * await checks.check(connection);   // rejects (and aborts the connection) when 8 KiB did not cross
 * checks.carries(connection);       // true once checked, either side
 * ```
 */
import { randomBytes } from "node:crypto";
import type { Connection, Stream } from "@libp2p/interface";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { TunnelHost } from "./host.ts";
import { streamToDuplex } from "./libp2p-duplex.ts";

export const pathCheckProtocol = "/leafmesh/path-check/1.0.0";
/** @default 8_192 — more than five full-sized TCP segments at an MTU of 1500, each way. */
export const pathCheckBytes = 8 * 1024;
/**
 * @default 6_000 — 8 KiB each way is a few round trips even on a 600 ms satellite link or a
 * 1 Mbit/s uplink; a black hole never answers, and the path falls on to the next way after it.
 */
export const pathCheckTimeoutMs = 6_000;

export interface PathChecksOptions {
  host: Pick<TunnelHost, "libp2p">;
  log: Logger;
  /** A connection the far side checked: the whole probe arrived here. */
  onCarried?: (connection: Connection) => void;
  timeoutMs?: number;
}

export class PathChecks {
  readonly #options: PathChecksOptions;
  readonly #carried = new WeakSet<Connection>();
  readonly #checks = new WeakMap<Connection, Promise<void>>();

  constructor(options: PathChecksOptions) {
    this.#options = options;
  }

  async start(): Promise<void> {
    await this.#options.host.libp2p.handle(pathCheckProtocol, (stream: Stream, connection: Connection) => this.#answer(stream, connection), {
      runOnLimitedConnection: true,
      maxInboundStreams: 4,
      maxOutboundStreams: 4,
    });
  }

  /** Whether the connection was seen to carry full-sized packets (or the peer cannot be asked). */
  carries(connection: Connection): boolean {
    return this.#carried.has(connection);
  }

  /** Checks a connection this side made (once per connection); rejects, and aborts it, when the probe did not come back. */
  check(connection: Connection): Promise<void> {
    let check = this.#checks.get(connection);
    if (!check) {
      check = this.#run(connection);
      this.#checks.set(connection, check);
    }
    return check;
  }

  async #run(connection: Connection): Promise<void> {
    const timeoutMs = this.#options.timeoutMs ?? pathCheckTimeoutMs;
    const probe = randomBytes(pathCheckBytes);
    const signal = AbortSignal.timeout(timeoutMs);
    let stream: Stream;
    try {
      stream = await connection.newStream(pathCheckProtocol, { runOnLimitedConnection: true, signal });
    } catch (error) {
      if ((error as Error).name === "UnsupportedProtocolError") {
        // An agent from before this check: the connection is used as it always was.
        this.#carried.add(connection);
        return;
      }
      return this.#failed(connection, `could not ask it to echo ${pathCheckBytes} bytes: ${describeError(error)}`);
    }
    const duplex = streamToDuplex(stream, connection);
    const echoed: Buffer[] = [];
    let received = 0;
    const outcome = await new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(`${received} of ${pathCheckBytes} bytes came back within ${timeoutMs} ms, though the connection was made: small packets pass, full-sized ones do not (a path MTU black hole: a link of smaller MTU on the way whose ICMP "fragmentation needed" is dropped)`), timeoutMs);
      duplex.on("data", (chunk: Buffer) => {
        received += chunk.length;
        // A peer that sends more than the probe is not echoing it: said at once, not gathered until the timeout.
        if (received > pathCheckBytes) {
          clearTimeout(timer);
          return resolve(`more than the ${pathCheckBytes} bytes sent came back (${received})`);
        }
        echoed.push(chunk);
      });
      duplex.once("end", () => {
        clearTimeout(timer);
        resolve(Buffer.concat(echoed).equals(probe) ? undefined : `the echo of ${pathCheckBytes} bytes came back changed (${received} bytes)`);
      });
      duplex.once("error", (error) => {
        clearTimeout(timer);
        resolve(`the echo of ${pathCheckBytes} bytes failed after ${received}: ${describeError(error)}`);
      });
      duplex.end(probe);
    });
    if (outcome === undefined) {
      this.#carried.add(connection);
      return;
    }
    duplex.destroy();
    return this.#failed(connection, outcome);
  }

  #failed(connection: Connection, why: string): never {
    const error = new LeafmeshError("TUNNEL_FAILED", `the connection to ${connection.remoteAddr.toString()} does not carry data: ${why}`);
    connection.abort(error);
    throw error;
  }

  /** The far side's check: echo what it sends (at most the probe's size) and end. */
  #answer(stream: Stream, connection: Connection): void {
    const duplex = streamToDuplex(stream, connection);
    let received = 0;
    const timer = setTimeout(() => duplex.destroy(new LeafmeshError("TUNNEL_FAILED", "path check: the probe did not arrive in time")), (this.#options.timeoutMs ?? pathCheckTimeoutMs) + 2_000);
    duplex.on("error", (error) => this.#options.log.debug({ peer: connection.remotePeer.toString(), err: describeError(error) }, "path check not answered"));
    duplex.once("close", () => clearTimeout(timer));
    duplex.on("data", (chunk: Buffer) => {
      received += chunk.length;
      if (received > pathCheckBytes) return void duplex.destroy(new LeafmeshError("TUNNEL_FAILED", `path check: more than ${pathCheckBytes} bytes sent`));
      duplex.write(chunk);
    });
    duplex.once("end", () => {
      duplex.end();
      if (received === pathCheckBytes && !this.#carried.has(connection)) {
        this.#carried.add(connection);
        this.#options.onCarried?.(connection);
      }
    });
  }
}
