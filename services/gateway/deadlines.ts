/**
 * Deadlines of requests in flight, without a timer per request: the entries of
 * one duration (a route's timeout) are kept in the order they were added,
 * which is the order they expire in, in a list linked through the entries
 * themselves, with one timer per duration set for the first of them. Adding
 * and removing an entry allocates nothing and touches no timer; the timer,
 * when it fires, expires the entries whose time passed and is set again for
 * the next one. Node's own timers keep a list per duration too, but
 * setTimeout and clearTimeout made a Timeout and a closure per request, and
 * inserted and unlinked it, on every request the gateway forwarded.
 *
 * ```ts
 * class Request extends DeadlineEntry { expired() { answer504(); } }
 * const deadlines = new Deadlines();
 * deadlines.add(request, 60_000); // … answered in time:
 * deadlines.remove(request);
 * ```
 */

/** Something with a deadline: expired() is called once its time passed, unless it was removed before. */
export abstract class DeadlineEntry {
  /** When it expires (performance.now() ms); its list, and its neighbours in it, while it waits. */
  deadlineAt = 0;
  deadlineList: DeadlineList | undefined = undefined;
  deadlinePrevious: DeadlineEntry | undefined = undefined;
  deadlineNext: DeadlineEntry | undefined = undefined;

  abstract expired(): void;
}

class DeadlineList {
  readonly ms: number;
  first: DeadlineEntry | undefined;
  last: DeadlineEntry | undefined;
  /** Set while the list may hold entries; fires at the first one's time, or before it (that entry was removed). */
  timer: NodeJS.Timeout | undefined;
  readonly fire = () => this.#fire();

  constructor(ms: number) {
    this.ms = ms;
  }

  #fire(): void {
    this.timer = undefined;
    const now = performance.now();
    let entry = this.first;
    // Node's timers count whole milliseconds of the loop's cached time: within a millisecond is due.
    while (entry && entry.deadlineAt <= now + 1) {
      unlink(entry);
      entry.expired();
      entry = this.first;
    }
    if (entry) this.#set(entry.deadlineAt - now);
  }

  #set(ms: number): void {
    // Unreferenced: a request in flight holds its sockets, which keep the process running; an empty list holds nothing.
    this.timer = setTimeout(this.fire, Math.max(1, Math.ceil(ms)));
    this.timer.unref();
  }

  append(entry: DeadlineEntry, now: number): void {
    entry.deadlineAt = now + this.ms;
    entry.deadlineList = this;
    entry.deadlinePrevious = this.last;
    entry.deadlineNext = undefined;
    if (this.last) this.last.deadlineNext = entry;
    else this.first = entry;
    this.last = entry;
    if (!this.timer) this.#set(this.ms);
  }
}

function unlink(entry: DeadlineEntry): void {
  const list = entry.deadlineList;
  if (!list) return;
  const { deadlinePrevious: previous, deadlineNext: next } = entry;
  if (previous) previous.deadlineNext = next;
  else list.first = next;
  if (next) next.deadlinePrevious = previous;
  else list.last = previous;
  entry.deadlineList = entry.deadlinePrevious = entry.deadlineNext = undefined;
}

export class Deadlines {
  readonly #lists = new Map<number, DeadlineList>();

  /** The entry expires `ms` from now (added again: its deadline moves). */
  add(entry: DeadlineEntry, ms: number): void {
    unlink(entry);
    let list = this.#lists.get(ms);
    if (!list) this.#lists.set(ms, (list = new DeadlineList(ms)));
    list.append(entry, performance.now());
  }

  /** It will not expire (it was answered in time); nothing when it was not waiting. */
  remove(entry: DeadlineEntry): void {
    unlink(entry);
  }

  /** Entries waiting, for tests. */
  get size(): number {
    let size = 0;
    for (const list of this.#lists.values()) for (let entry = list.first; entry; entry = entry.deadlineNext) size++;
    return size;
  }
}
