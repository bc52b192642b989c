/**
 * What to do about a nats-server that did not start, read from its last lines (nats/supervisor.ts adds it to the
 * start's error): the server's own words say what failed, not what the operator should do about it.
 *
 * ```ts
 * startFailureHint('[FTL] Error listening on port: 127.0.0.1:4222, "... bind: address already in use"'); // "Another process holds …"
 * refusedListener(lines, [{ flag: "--nats-listen", address }]); // CONFIG_INVALID "--nats-listen 127.0.0.1:4222: the address is in use (…)"
 * ```
 */
import { listenRefused } from "../lib/listen-errors.ts";
import type { LeafmeshError } from "../lib/errors.ts";
import type { HostPort } from "./render.ts";

/** A flag of the role and the address it gave one of the server's listeners. */
export interface ListenFlag {
  flag: string;
  address: HostPort;
}

/** nats-server's words for a bind that failed, as the errno Node would say. */
const bindCodes: Record<string, string> = { "address already in use": "EADDRINUSE", "permission denied": "EACCES", "cannot assign requested address": "EADDRNOTAVAIL" };
const hints: { pattern: RegExp; hint: string }[] = [
  {
    pattern: /address already in use/,
    hint: "Another process holds one of its addresses (a hub and an agent on one machine both take ports 4222 and 8222 by default): stop it, or give this one addresses of its own.",
  },
  {
    pattern: /cannot assign requested address|no such host/,
    hint: "One of its listen addresses is not an address of this host (or a name that does not resolve): give one this host has (ip -br addr), or 0.0.0.0.",
  },
  {
    // A clustered server's JetStream answers /healthz only once a majority of the --routes servers elected a meta leader.
    pattern: /JetStream has not established contact with a meta leader|Waiting for routing to be established/,
    hint: "Its cluster has no majority up yet: start the other servers of its --routes at the same time (a server waits for them only this long), and check that their route addresses are reachable from here.",
  },
];

/** The hint for the first kind of failure the lines show, as a line to append; "" when none applies. */
export function startFailureHint(lines: string): string {
  const found = hints.find(({ pattern }) => pattern.test(lines));
  return found ? `\n${found.hint}` : "";
}

/**
 * The listener the server could not open ("... listen tcp 127.0.0.1:8222: bind: address already in use", whichever of
 * its ports), said with the role's flag for that address, as the role's own listeners are; undefined when the lines
 * show no such failure or no flag gave that port.
 */
export function refusedListener(lines: string, flags: readonly ListenFlag[] = []): LeafmeshError | undefined {
  const match = /listen tcp (\S+):(\d+): bind: (address already in use|permission denied|cannot assign requested address)/.exec(lines);
  const given = match && flags.find(({ address }) => address.port === Number(match[2]));
  if (!match || !given) return undefined;
  const line = lines.split("\n").find((text) => text.includes(match[0])) ?? match[0];
  const inUse = "a hub and an agent on one machine both take 4222 and 8222 by default: give each its own";
  return listenRefused(given.flag, given.address, Object.assign(new Error(line.trim()), { code: bindCodes[match[3]] }), inUse);
}
