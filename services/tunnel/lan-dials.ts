/**
 * Dials the LAN neighbours mDNS finds, so that identify tells their node names. mDNS answers on the
 * mesh's own service (psk.ts), so a neighbour that then fails the encrypted handshake holds no key of
 * this mesh: an impostor, or a stale announcement. It used to be dialled again at every mDNS answer
 * (about once a second, for as long as it answered), and one warning was kept per peer id for ever.
 * Now such a neighbour is left alone for `retryMs`, at most `maxRemembered` of them are remembered (the
 * oldest go first), and the failures are logged as bursts (lib/burst-log.ts): a LAN that announces
 * thousands of peer ids costs a bounded set and a few lines.
 *
 * Only a handshake that did not decrypt blames the mesh key (host.ts handshakeFailure). One that reached
 * another peer at the announced address (a stale answer, an address such as 127.0.0.1 that reaches another
 * node or this node itself) says so, and so does a neighbour that hung up mid-handshake: each is left alone
 * for `retryMs` too. Dials start for mDNS answers only (paths.ts): libp2p calls every new peer of its store
 * "discovered", also one learned through the relay, whose addresses need not be on this LAN at all.
 *
 * ```ts
 * const dials = new LanDials({ dial: (peer, signal) => libp2p.dial(peer, { signal }), log, clock });
 * libp2p.addEventListener("peer:discovery", (event) => dials.found(event.detail.id));
 * ```
 */
import type { PeerId } from "@libp2p/interface";
import { BurstLog } from "../../lib/burst-log.ts";
import type { Clock } from "../../lib/clock.ts";
import { describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { handshakeFailure, type HandshakeFailure } from "./host.ts";

export interface LanDialsOptions {
  dial: (peer: PeerId, signal: AbortSignal) => Promise<unknown>;
  log: Logger;
  clock: Clock;
  /** @default 3_000 */
  dialTimeoutMs?: number;
  /** @default 300_000 — how long a neighbour that failed the handshake is not dialled again. */
  retryMs?: number;
  /** @default 1_000 */
  maxRemembered?: number;
  /** This node's own peer id: a dial that reached it is said as such. */
  self?: string;
}

export class LanDials {
  readonly #options: LanDialsOptions;
  /** Peer id → when it may be dialled again; insertion order is age. */
  readonly #refused = new Map<string, number>();
  readonly #failures: BurstLog;
  readonly #wrongPeers: BurstLog;
  readonly #hungUp: BurstLog;
  #stopped = false;
  #failed = 0;

  constructor(options: LanDialsOptions) {
    this.#options = options;
    this.#failures = new BurstLog({ log: options.log, clock: options.clock, message: "a LAN peer answered on this mesh's mDNS service but failed the encrypted handshake: it does not hold this mesh's pre-shared key" });
    this.#wrongPeers = new BurstLog({
      log: options.log,
      clock: options.clock,
      message: "a LAN peer's announced address reached another peer of this mesh (a stale mDNS answer, or an address such as 127.0.0.1 that reaches another node or this one); the mesh key is not in question",
    });
    this.#hungUp = new BurstLog({ log: options.log, clock: options.clock, message: "a LAN peer's announced address hung up during the encrypted handshake: no agent of this mesh is reached there" });
  }

  /** Neighbours that failed the handshake and are left alone for now. */
  get refused(): number {
    return this.#refused.size;
  }

  /** Handshakes failed so far (any kind). */
  get failed(): number {
    return this.#failed;
  }

  found(peer: PeerId): void {
    if (this.#stopped) return;
    const id = peer.toString();
    const until = this.#refused.get(id);
    if (until !== undefined) {
      if (this.#options.clock.monotonic() < until) return;
      this.#refused.delete(id);
    }
    const signal = AbortSignal.timeout(this.#options.dialTimeoutMs ?? 3_000);
    void this.#options.dial(peer, signal).catch((error: unknown) => {
      // A timeout mid-handshake also fails in the handshake, hence the signal.
      const failure = this.#stopped || signal.aborted ? undefined : handshakeFailure(error);
      if (!failure) {
        this.#options.log.debug({ peer: id, err: describeError(error) }, "LAN peer did not answer");
        return;
      }
      this.#failed++;
      this.#refused.set(id, this.#options.clock.monotonic() + (this.#options.retryMs ?? 300_000));
      if (this.#refused.size > (this.#options.maxRemembered ?? 1_000)) this.#refused.delete(this.#refused.keys().next().value!);
      this.#say(failure, id, error);
    });
  }

  #say(failure: HandshakeFailure, peer: string, error: unknown): void {
    if (failure.kind === "key differs") return this.#failures.note("handshake failed", { peer, err: describeError(error) });
    if (failure.kind === "closed") return this.#hungUp.note("hung up in the handshake", { peer, err: describeError(error) });
    const itself = failure.answeredAs === this.#options.self;
    this.#wrongPeers.note(itself ? "this node itself answered" : "another node answered", { peer, answeredAs: itself ? `this node itself (${failure.answeredAs})` : failure.answeredAs });
  }

  stop(): void {
    this.#stopped = true;
    for (const burst of [this.#failures, this.#wrongPeers, this.#hungUp]) burst.close();
  }
}
