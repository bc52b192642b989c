/**
 * A client's first bytes sent with its tunnel stream's target header, before the far agent's answer ("0-RTT"
 * open, as TCP Fast Open's SYN data and TLS 1.3 early data): on a relayed path across a WAN the answer is a
 * whole round trip, which every new connection's first request otherwise waits for.
 *
 * The caller (a proxy) hands its client socket to one open as `EarlyBytes`; the stream opener, once the target
 * header is written, passes on what the client has sent and sends, up to `earlyBytesLimit`, and keeps a copy
 * until the answer. The answer settles them, so that they are never lost nor sent twice:
 * - OK: they were this stream's (the far agent wrote them to its target first); the copy goes, and what the
 *   client sends next is the join's to carry.
 * - refused: the far agent wrote them nowhere (it writes a stream's bytes to its target only once connected;
 *   stream-server.ts), so they go back to the front of the client socket (`unshift`), to be sent once more to
 *   whichever endpoint the caller tries next.
 * - no answer (a cut, a timeout, the caller gave up) after some went: the far agent may have written them to a
 *   target it had connected, so they can be neither sent again nor taken back: `inDoubt`, and the caller must
 *   end its client with a reset, never try elsewhere. Before any went (a carrier that failed to open) the
 *   client is as it was.
 *
 * When they are in doubt, nothing here can make them certain. A stream's bytes once written may have been read by the
 * far agent and written to its target, whatever the far end does next: a TCP ack says only that the far kernel got
 * them (its agent may then have read them, or not), a relay channel's credit comes a quarter window at a time, and a
 * dead agent says nothing at all. Certain is only "never left this process" or "the far agent said so" (a refusal).
 * So the risk is taken only where the far agent proved alive a moment ago: the opener gives early bytes to no spare
 * session whose peer it has not heard on lately (services/tunnel/spares.ts, 4 s; a relay channel's pings count), and
 * there they wait for the answer. What is left is the 0-RTT risk itself: an agent that dies between proving alive and
 * answering costs its clients in flight their connections (reset), as TLS early data and TCP Fast Open would.
 *
 * The client's end (a FIN) is never read here: only what its socket holds is taken (`read(readableLength)`
 * never makes a Readable emit 'end'), so the join still sees the end, and bytes can always be put back.
 *
 * ```ts
 * const early = new EarlyBytes(client);
 * try { upstream = await dialer.openStream(node, target, { signal, early }); }
 * catch (error) { if (early.inDoubt) return client.resetAndDestroy(); ... try the next endpoint ... }
 * ```
 */
import type { Readable, Writable } from "node:stream";
import { LeafmeshError } from "./errors.ts";

/**
 * @default 16_384 — early bytes per open at most; past it the rest waits for the answer, as before. A first request
 * (an HTTP request with its headers, a TLS ClientHello) fits; the far agent holds them unread while it connects, and
 * the opener a copy until the answer, so opens under way towards a node (64) hold 1 MiB at most each side.
 */
export const earlyBytesLimit = 16 * 1024;

/** Where one open's early bytes stand: not started, being sent, or settled by the answer (or its absence). */
export type EarlyBytesState = "waiting" | "sending" | "committed" | "given back" | "in doubt" | "withdrawn";

/** A stream that failed without an answer after early bytes went: they may have reached a target, so the client cannot be served elsewhere. */
export class EarlyBytesInDoubt extends LeafmeshError {
  constructor(bytes: number, cause: unknown) {
    super("TUNNEL_FAILED", `the tunnel stream failed before its answer, after ${bytes} early bytes of the client went: they may have reached the target, so they are not sent elsewhere (the client is reset)`, { cause });
  }
}

export class EarlyBytes {
  readonly #source: Readable;
  readonly #limit: number;
  #state: EarlyBytesState = "waiting";
  #sink: Writable | undefined;
  /** What went, in order: given back on a refusal. */
  #sent: Buffer[] = [];
  #sentBytes = 0;
  readonly #onReadable = () => this.#take();

  constructor(source: Readable, options: { limitBytes?: number } = {}) {
    this.#source = source;
    this.#limit = options.limitBytes ?? earlyBytesLimit;
  }

  get state(): EarlyBytesState {
    return this.#state;
  }

  get sentBytes(): number {
    return this.#sentBytes;
  }

  /** Sent without an answer: the caller must reset its client, not try another endpoint. */
  get inDoubt(): boolean {
    return this.#state === "in doubt";
  }

  /** Passes what the source holds, and what it gets until the answer, to `sink` (right after the target header). Once only. */
  sendTo(sink: Writable): void {
    if (this.#state !== "waiting") return;
    this.#state = "sending";
    this.#sink = sink;
    this.#source.on("readable", this.#onReadable);
    this.#take();
  }

  #take(): void {
    while (this.#state === "sending" && this.#sentBytes < this.#limit) {
      const available = Math.min(this.#source.readableLength, this.#limit - this.#sentBytes);
      if (available === 0) return;
      const chunk = this.#source.read(available) as Buffer | null;
      if (!chunk) return;
      this.#sent.push(chunk);
      this.#sentBytes += chunk.length;
      this.#sink!.write(chunk);
    }
    this.#stopReading();
  }

  #stopReading(): void {
    this.#source.off("readable", this.#onReadable);
    this.#sink = undefined;
  }

  /** The far agent answered OK: what went is the stream's. */
  commit(): void {
    if (this.#state !== "waiting" && this.#state !== "sending") return;
    this.#stopReading();
    this.#state = "committed";
    this.#sent = [];
  }

  /** The far agent refused the target and wrote what went nowhere: back to the front of the source, to go once more elsewhere. */
  giveBack(): void {
    if (this.#state !== "waiting" && this.#state !== "sending") return;
    this.#stopReading();
    const sent = Buffer.concat(this.#sent);
    this.#sent = [];
    if (sent.length === 0 || this.#source.destroyed) {
      this.#state = "given back";
      return;
    }
    try {
      this.#source.unshift(sent);
      this.#state = "given back";
    } catch {
      // ERR_STREAM_UNSHIFT_AFTER_END_EVENT: not reachable (the end is never read here); were it, the bytes are lost to this client.
      this.#state = "in doubt";
    }
  }

  /** No answer came (a cut, a timeout, the caller gave up): in doubt if anything went, else as if never started. */
  unanswered(): void {
    if (this.#state !== "waiting" && this.#state !== "sending") return;
    this.#stopReading();
    this.#state = this.#sentBytes > 0 ? "in doubt" : "withdrawn";
    this.#sent = [];
  }
}
