/**
 * Watches this host's own addresses while the tunnel runs: at the edge they change under a
 * running agent (a shop router hands out a new DHCP lease, a tablet roams to another Wi-Fi
 * segment, an interface is plugged again). Linux tells a socket nothing when the address it is
 * bound to goes away: a connection from that address can send nothing more (no route has it as
 * a source), and each end found out only from its pings or keepalive, 15–20 s later, while
 * streams waited and the node record kept announcing the address that was gone.
 *
 * Polled (Node has no netlink; `os.networkInterfaces()` is one getifaddrs call), every
 * `intervalMs`. The tunnel reacts to a change (tunnel-actor.ts): direct and punched connections
 * are checked at once, streams on sockets from a vanished address reset, the record put and the
 * NAT measured again.
 *
 * ```ts
 * const watch = new NetworkWatch({ clock, addresses: hostAddresses, onChange: ({ gone, added }) => ... });
 * watch.start();
 * ```
 */
import { networkInterfaces } from "node:os";
import type { Clock } from "../../lib/clock.ts";

/** @default 2_000 — how often the host's addresses are looked at: a change is acted on within this. */
export const networkWatchIntervalMs = 2_000;

export interface AddressChange {
  /** Addresses this host had and has no more. */
  gone: string[];
  /** Addresses this host has now and did not have. */
  added: string[];
}

/** The host's addresses a tunnel connection can use: every non-loopback address of every interface, IPv6 link-local ones left out (libp2p announces none of them). */
export function hostAddresses(interfaces: ReturnType<typeof networkInterfaces> = networkInterfaces()): string[] {
  const addresses = new Set<string>();
  for (const entries of Object.values(interfaces)) {
    for (const entry of entries ?? []) {
      if (entry.internal || /^fe80:/i.test(entry.address)) continue;
      addresses.add(entry.address);
    }
  }
  return [...addresses].sort();
}

/** What changed between two looks; undefined when nothing did. */
export function addressChange(before: readonly string[], after: readonly string[]): AddressChange | undefined {
  const had = new Set(before);
  const has = new Set(after);
  const gone = before.filter((address) => !has.has(address));
  const added = after.filter((address) => !had.has(address));
  return gone.length > 0 || added.length > 0 ? { gone, added } : undefined;
}

export interface NetworkWatchOptions {
  clock: Clock;
  /** @default hostAddresses */
  addresses?: () => string[];
  /** @default networkWatchIntervalMs */
  intervalMs?: number;
  onChange: (change: AddressChange) => void;
}

export class NetworkWatch {
  readonly #options: NetworkWatchOptions;
  #last: string[] = [];
  #timer: unknown;

  constructor(options: NetworkWatchOptions) {
    this.#options = options;
  }

  /** The addresses at the last look. */
  get addresses(): readonly string[] {
    return this.#last;
  }

  start(): void {
    this.#last = this.#read();
    this.#timer = this.#options.clock.setInterval(() => this.look(), this.#options.intervalMs ?? networkWatchIntervalMs);
  }

  /** Looks now (the timer's job; a test steps it). */
  look(): void {
    const now = this.#read();
    const change = addressChange(this.#last, now);
    this.#last = now;
    if (change) this.#options.onChange(change);
  }

  stop(): void {
    this.#options.clock.clearInterval(this.#timer);
  }

  #read(): string[] {
    return (this.#options.addresses ?? hostAddresses)();
  }
}
