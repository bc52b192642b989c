/**
 * The receive window of one relay channel, sized from the path's measured round
 * trip (issue 17: "credit windows sized from the measured RTT"). A channel starts
 * with `windowBytes` of credit (relay.ts: 256 KiB) and grows towards `maxWindowBytes`
 * while the window, not the reader, is what holds the sender back, and only as far as
 * the path's bandwidth × round trip asks, or what the reader takes in `queueBudgetMs`
 * (a LAN path under load needs megabytes: NATS queues more than the round trip shows).
 * It started at 4 MiB: behind a 1 Mbit/s uplink that was 33 s of frames queued in the
 * node's leaf connection, ahead of every libp2p ping, NATS PING and relay accept on it;
 * a relayed upload was reset ~13 s in (its path's pings timed out) and the node's leaf
 * link dropped:
 *
 * - a round-trip sample is the time from a grant to the first data frame with a
 *   byte beyond what the peer could send before that grant: the peer cannot send
 *   it sooner than one trip of the credit and one of the data, and sends it then
 *   when it was waiting on the grant. The opener's first sample is its open →
 *   accept. The smallest sample is the path's round trip without queues
 *   (`minRttMs`);
 * - when a grant is due and the reader is not behind, the bytes the reader took
 *   since the last look, over at least two round trips, give a rate; the window
 *   grows to twice rate × minRttMs, the path's bandwidth × delay with room, or to
 *   rate × queueBudgetMs when that is more (at most doubling at a time). A sender held
 *   back by its own pace, or a window that only filled queues (round trips far above
 *   the minimum) beyond a quarter second of the rate, gives a target below the
 *   window: it does not grow;
 * - it never shrinks while the channel lives, and the endpoint's budget
 *   (relay-budget.ts) still bounds what all channels towards a node hold together.
 *
 * ```ts
 * const window = new ReceiveWindow({ bytes: 256 << 10, maxBytes: 16 << 20 });
 * window.grantSent(now, grantedBefore); window.dataArrived(now, delivered);
 * const extra = window.growth(now, consumed, readerKeepsUp);  // asked of the budget on top of the grant
 * ```
 */

/**
 * @default 250 — a window may grow to hold what its reader takes in this long, also where the
 * measured round trip is shorter: the queue a channel may build on its path, in time, not bytes.
 */
export const queueBudgetMs = 250;

export class ReceiveWindow {
  /** Credit the peer is given per round (initial window plus growth); grants go back a quarter of it at a time. */
  bytes: number;
  readonly #maxBytes: number;
  #minRttMs: number | undefined;
  /** Grants whose round trip is not timed yet: what the peer could send before each, and when it went out. */
  readonly #grants: { limit: number; at: number }[] = [];
  #epochAt: number | undefined;
  #epochConsumed = 0;

  constructor(options: { bytes: number; maxBytes: number }) {
    this.bytes = options.bytes;
    this.#maxBytes = Math.max(options.bytes, options.maxBytes);
  }

  /** The smallest round trip measured so far, in ms (undefined before the first sample). */
  get minRttMs(): number | undefined {
    return this.#minRttMs;
  }

  /** A round trip measured another way (the opener's open → accept). */
  sample(rttMs: number): void {
    if (Number.isFinite(rttMs) && rttMs >= 0) this.#minRttMs = Math.min(this.#minRttMs ?? Infinity, rttMs);
  }

  /** A grant went out; `grantedBefore`: all the credit the peer had been given before it. */
  grantSent(now: number, grantedBefore: number): void {
    // A grant goes out per quarter window read: a handful are ever untimed; bounded all the same.
    if (this.#grants.length >= 16) this.#grants.shift();
    this.#grants.push({ limit: grantedBefore, at: now });
  }

  /** A data frame arrived; `delivered`: all bytes the peer sent so far, this frame's included. */
  dataArrived(now: number, delivered: number): void {
    let timed: { limit: number; at: number } | undefined;
    while (this.#grants.length > 0 && delivered > this.#grants[0].limit) timed = this.#grants.shift();
    if (timed) this.sample(now - timed.at);
  }

  /**
   * Bytes to add to the window at the grant that is due now (0: none). `consumed`: all bytes the
   * reader took so far; `readerKeepsUp`: what waits unread is small (a reader behind sets the pace, not the window).
   */
  growth(now: number, consumed: number, readerKeepsUp: boolean): number {
    if (this.#epochAt === undefined) {
      this.#epochAt = now;
      this.#epochConsumed = consumed;
      return 0;
    }
    const rtt = this.#minRttMs;
    const elapsed = now - this.#epochAt;
    // The rate is what the reader took over at least two round trips (one alone may be one burst
    // that arrived at once); grants in between, the peer still holding credit, leave it running.
    if (!readerKeepsUp || rtt === undefined || this.bytes >= this.#maxBytes || elapsed < Math.max(1, 2 * rtt)) return 0;
    const rate = (consumed - this.#epochConsumed) / elapsed;
    this.#epochAt = now;
    this.#epochConsumed = consumed;
    // Twice bandwidth × delay, or what the reader takes in `queueBudgetMs`, whichever is more: on a LAN
    // under load (NATS's own queues, a millisecond round trip) megabytes, reached in a few doublings; on a
    // slow uplink a little, so a channel never queues more than a fraction of a second there.
    const target = Math.min(this.#maxBytes, 2 * this.bytes, Math.ceil(Math.max(2 * rate * Math.max(1, rtt), rate * queueBudgetMs)));
    return Math.max(0, target - this.bytes);
  }
}
