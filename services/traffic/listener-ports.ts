/**
 * Listener ports chosen by the actor, not by the kernel. Binding port 0 makes
 * Linux search the ephemeral range for a free port on every bind, and with
 * thousands of listeners bound each search gets longer: measured on this kind of
 * machine, 10,000 loopback listeners took 4.2 s with port 0 and 0.2 s with ports
 * given explicitly. The picker walks the same range the kernel would use (so
 * nothing else expects those ports to be free) from a start of the caller's
 * choosing (the agent's: its node name's, so that it binds the same ports when it
 * starts again); a port that turns out to be taken is skipped by the caller, which
 * asks for the next.
 *
 * ```ts
 * const picker = new ListenerPortPicker(readEphemeralRange());
 * const socket = await listenOnPickedPort(picker, async (port) => { ...; return socket; });
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

/** A fraction in [0, 1) that a name always gives (FNV-1a): where a node's picker starts, the same at every start. */
export function nameFraction(name: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < name.length; index++) hash = Math.imul(hash ^ name.charCodeAt(index), 0x01000193) >>> 0;
  return hash / 2 ** 32;
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

/** Ports tried from the picker before the kernel is asked for one (port 0). */
export const pickedPortAttempts = 32;

/**
 * Runs `listen` on the picker's ports until one binds: a taken one (EADDRINUSE, EACCES) is skipped, and after
 * `pickedPortAttempts` of them the kernel picks (port 0). `listen` cleans up after its own failure.
 */
export async function listenOnPickedPort<T>(picker: Pick<ListenerPortPicker, "next">, listen: (port: number) => Promise<T>): Promise<T> {
  for (let attempt = 0; attempt < pickedPortAttempts; attempt++) {
    try {
      return await listen(picker.next());
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "EADDRINUSE" && code !== "EACCES") throw error;
    }
  }
  return listen(0);
}
