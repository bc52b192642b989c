/**
 * The credit budget of one node's relay endpoint: all channels towards this node
 * together hold at most `budgetBytes` of credit (bytes peers may still send, are
 * sending, or this node received and has not read yet), beyond `minWindowBytes`
 * that each channel may always hold. It bounds what can be queued for the node's
 * NATS client (nats-server cuts a client off past 64 MiB pending) and what waits
 * unread in memory, however many streams are busy.
 *
 * A channel that asked for more than the budget had left is starved; it is woken
 * (`regrant`) once credit comes back.
 *
 * ```ts
 * const budget = new CreditBudget({ budgetBytes: 16 << 20, minWindowBytes: 65_536 });
 * const granted = budget.allot(heldByChannel, wanted);   // counted as held from now on
 * budget.release(bytesTheReaderTook);
 * ```
 */

/** What the budget wakes when credit comes back. */
export interface StarvedChannel {
  regrant(): void;
}

export class CreditBudget {
  readonly #budgetBytes: number;
  readonly #minWindowBytes: number;
  readonly #starved = new Set<StarvedChannel>();
  #outstanding = 0;
  #wakeScheduled = false;

  constructor(options: { budgetBytes: number; minWindowBytes: number }) {
    this.#budgetBytes = options.budgetBytes;
    this.#minWindowBytes = options.minWindowBytes;
  }

  /** Credit held over all channels. */
  get outstanding(): number {
    return this.#outstanding;
  }

  /** How much of `wanted` a channel that holds `held` may be granted now (and it is counted as held). */
  allot(held: number, wanted: number): number {
    const floor = Math.max(0, this.#minWindowBytes - held);
    const shared = Math.max(0, this.#budgetBytes - this.#outstanding);
    const given = Math.max(0, Math.min(wanted, Math.max(floor, shared)));
    this.#outstanding += given;
    return given;
  }

  /** Credit given back (a reader took its bytes, or a channel ended); starved channels may get theirs now. */
  release(bytes: number): void {
    this.#outstanding -= bytes;
    if (this.#starved.size === 0 || this.#wakeScheduled) return;
    // Woken on the next tick, once: a channel woken here releases too, and doing it in place recursed.
    this.#wakeScheduled = true;
    process.nextTick(() => {
      this.#wakeScheduled = false;
      for (const channel of [...this.#starved]) {
        if (this.#outstanding >= this.#budgetBytes) break;
        channel.regrant();
      }
    });
  }

  /** Marks a channel as waiting for credit (or no longer). */
  starve(channel: StarvedChannel, starved: boolean): void {
    if (starved) this.#starved.add(channel);
    else this.#starved.delete(channel);
  }
}
