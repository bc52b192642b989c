/**
 * What to do about a nats-server that did not start, read from its last lines (nats/supervisor.ts adds it to the
 * start's error): the server's own words say what failed, not what the operator should do about it.
 *
 * ```ts
 * startFailureHint('[FTL] Error listening on port: 127.0.0.1:4222, "... bind: address already in use"'); // "Another process holds …"
 * ```
 */
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
