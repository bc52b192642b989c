/**
 * A leaf link that is made and goes stale again and again, never carrying anything: the path lets a
 * TCP connection open (small packets) but not what follows (full-sized ones). Probed with a 1400-byte
 * link on the way to the hub whose ICMP "fragmentation needed" was dropped (a path MTU black hole, as
 * behind a PPPoE uplink or a tunnel): the agent's nats-server made the link every 3 s and lost it 2 s
 * later to "Stale Connection", for as long as it ran, and said so only at debug level ("Leafnode
 * connection created", "... closed: Stale Connection" are info lines); the operator read one "not
 * connected to any upstream" and a status with no link and no reason. Three such links in a row are
 * said here, once a minute (nats/server-lines.ts), with how to check and what to change.
 *
 * A link that lived longer than `staleWithinMs` before it went stale is an ordinary cut (a link that
 * went down, a hub that stopped): that is not this, and starts the count again.
 *
 * ```ts
 * const stale = staleLeafExplainer();
 * stale("[9] 2026/12/06 23:07:15.192 [INF] 198.18.23.2:7422 - lid:14 - Leafnode connection created for account: $G ");
 * stale("[9] 2026/12/06 23:07:16.831 [INF] 198.18.23.2:7422 - lid:14 - Leafnode connection closed: Stale Connection account: $G"); // undefined: once
 * ```
 */

/** @default 3 — links in a row that went stale young before it is said (one is a hub that restarted). */
export const staleLinksInARow = 3;
/**
 * @default 15_000 — a link that goes stale within this long of being made never worked: the agent's leaf
 * pings every 2 s and gives up after 2 unanswered (nats/render.ts), a few seconds; a working link that is
 * cut later lived longer than this.
 */
export const staleWithinMs = 15_000;

const created = /(\S+) - lid:(\d+) - Leafnode connection created/;
const closed = /(\S+) - lid:(\d+) - Leafnode connection closed: (.*?)(?: account: .*)?$/;

export function staleLeafExplainer(now: () => number = () => performance.now()): (line: string) => string | undefined {
  const madeAt = new Map<string, number>();
  const inARow = new Map<string, { count: number; longestMs: number }>();
  return (line) => {
    const made = created.exec(line);
    if (made) {
      madeAt.set(made[2], now());
      // Bounded: a link id whose close never came is forgotten once a hundred others were made.
      if (madeAt.size > 100) madeAt.delete(madeAt.keys().next().value!);
      return undefined;
    }
    const gone = closed.exec(line);
    if (!gone) return undefined;
    const [, remote, id, reason] = gone;
    const at = madeAt.get(id);
    madeAt.delete(id);
    if (at === undefined) return undefined;
    const livedMs = now() - at;
    if (!/Stale Connection/i.test(reason) || livedMs > staleWithinMs) {
      inARow.delete(remote);
      return undefined;
    }
    const run = inARow.get(remote) ?? { count: 0, longestMs: 0 };
    run.count++;
    run.longestMs = Math.max(run.longestMs, livedMs);
    inARow.set(remote, run);
    if (inARow.size > 100) inARow.delete(inARow.keys().next().value!);
    if (run.count < staleLinksInARow) return undefined;
    const host = remote.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
    return (
      `the leaf link to ${remote} was made ${run.count} times in a row and each time went stale within ${(run.longestMs / 1000).toFixed(1)} s, before it carried anything: ` +
      `the path lets a connection open (small packets) but not what follows. Most often a path MTU black hole: a link of smaller MTU on the way (PPPoE 1492, a tunnel) whose ICMP "fragmentation needed" is dropped; ` +
      `else a hub that accepts connections but does not answer. Check from this node: ping -M do -s 1472 ${host} fails while ping -s 100 ${host} answers. ` +
      `Fix: clamp TCP MSS on the router (iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu), or give this node's route to the hub the path's MTU (ip route change default via GATEWAY mtu 1400)`
    );
  };
}
