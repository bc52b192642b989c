/**
 * When each peer's node record was written, on this node's clocks, for the node directory (node-directory.ts): how
 * fresh the record is, and how far the peer's clock is from this node's.
 *
 * Freshness is never the record's `at`, which is the peer's clock: an edge box whose clock ran 10 minutes slow (no RTC,
 * no NTP) had its record taken as expired by every other node, and nothing could reach it. A record's time is when it
 * arrived here, or, for the records already in the bucket when a watch began, that less their age by the bucket's own
 * timestamps; on the monotonic clock, as the keep-alive's due time is: this node's own clock set back an hour by NTP
 * held its keep-alives for that hour, and its record expired everywhere.
 *
 * ```ts
 * const times = new RecordTimes(clock);
 * times.wrote("edge-b", "12 1733500000000", clock.monotonic());   // true: a new write
 * times.ageMs("edge-b");                                        // ms since it was written
 * times.peerClock("edge-b", record.at);                          // then clockOffsetOf("edge-b")
 * times.isOlder("edge-b", 11);                                   // true once revision 12 was used: 11 is not
 * ```
 */
import type { Clock } from "../../lib/clock.ts";

export class RecordTimes {
  readonly #clock: Clock;
  /** When each peer's record was written, on the monotonic clock. */
  readonly #writtenAt = new Map<string, number>();
  /** The write each time is for (revision and the bucket's timestamp). */
  readonly #writes = new Map<string, string>();
  /** This node's wall clock less each peer's. */
  readonly #offsets = new Map<string, number>();
  /** The revision of each peer's key last used (a put or a delete; kept past a delete), in the stream watched now. */
  readonly #revisions = new Map<string, number>();

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** `write` (revision and bucket timestamp) came, written at `writtenAt` (monotonic); false when it is one already counted (a watch begun again hands over every record). */
  wrote(node: string, write: string, writtenAt: number): boolean {
    if (this.#writes.get(node) === write) return false;
    this.#writes.set(node, write);
    this.#writtenAt.set(node, writtenAt);
    return true;
  }

  /**
   * When the records a watch began with were written (monotonic), from their bucket timestamps (one clock, the hub's)
   * counted back from the newest: this node's own put, made just before the watch began, so written now.
   */
  initialWrites(created: Date[]): number[] {
    const newest = Math.max(...created.map((date) => date.getTime()));
    const now = this.#clock.monotonic();
    return created.map((date) => now - Math.max(0, newest - date.getTime()));
  }

  /** A record read outside the watch (a direct get): counted from now if the node was never seen. */
  seenNow(node: string): void {
    if (!this.#writtenAt.has(node)) this.#writtenAt.set(node, this.#clock.monotonic());
  }

  /** ms since `node`'s record was written; Infinity when none was. */
  ageMs(node: string): number {
    return this.#clock.monotonic() - (this.#writtenAt.get(node) ?? -Infinity);
  }

  /** The time written in `node`'s new record (`at`, its clock), set against when it was written here. */
  peerClock(node: string, at: string): void {
    const written = this.#writtenAt.get(node);
    const peer = Date.parse(at);
    if (written === undefined || !Number.isFinite(peer)) return;
    // The wall clock on purpose: what this node's clock read when the record was written, against the peer's.
    this.#offsets.set(node, this.#clock.now() - (this.#clock.monotonic() - written) - peer);
  }

  /** This node's wall clock less `node`'s (ms); undefined when no record of it came. */
  clockOffsetOf(node: string): number | undefined {
    return this.#offsets.get(node);
  }

  /**
   * Whether revision `revision` of `node`'s key is older than the one used last: one stream numbers them, so it is an
   * older record (a get answered after the watch brought a newer one, a watch's first records after that get).
   */
  isOlder(node: string, revision: number): boolean {
    return revision < (this.#revisions.get(node) ?? 0);
  }

  used(node: string, revision: number): void {
    this.#revisions.set(node, revision);
  }

  /** A watch begins: it brings each key as the bucket holds it, in a stream that may have been made again (numbered anew). */
  startOver(): void {
    this.#revisions.clear();
  }

  /** Drops a peer's times; its revision stays, so that a put older than the delete is not used. */
  forget(node: string): void {
    this.#writtenAt.delete(node);
    this.#writes.delete(node);
    this.#offsets.delete(node);
  }
}
