/**
 * Which node a site server refused, and why, in the site's log. nats-server 2.9.10 logs a refused leaf login as
 * "127.0.0.1:52948 - lid:31 - authentication error": no node, no reason (the reason is in its debug log only), and a
 * revoked member, retrying every second, gave the site's operator nothing to go on. The connection's closed record on
 * the server's monitor (`/connz?state=closed&cid=31`) holds the name the leaf gave and the user JWT it presented; the
 * account JWTs the site's resolver holds, kept current by the updates pushed at the hubs (trust/site-claims.ts), say
 * whether that user is revoked or expired. What a refused leaf presented is its own word: it is said as presented.
 *
 * ```ts
 * const refused = watchRefusedLeafs({ closedLeaf: (cid) => lookUp(cid), resolverDir, log });
 * refused.note("[812] 2026/12/07 07:47:23.953 [ERR] 127.0.0.1:52948 - lid:31 - authentication error");
 * // warn: "refused the login of node 'edge-j' (a leaf from 127.0.0.1:52948): it is revoked: …"
 * ```
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { decode, type Account, type User } from "@nats-io/jwt";
import { nodeNamePattern } from "../bus/subjects.ts";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { Repeats } from "../lib/repeats.ts";

/** A closed connection as the monitor's /connz?state=closed lists it (the fields used here). */
export interface ClosedLeaf {
  cid?: number;
  kind?: string;
  name?: string;
  jwt?: string;
  reason?: string;
}

export type RefusalKind = "revoked" | "expired" | "unknown-account" | "no-credentials" | "other";

/** Who the refused leaf said it was, and why the site refused it, by the accounts in `resolverDir`. */
export function explainRefusedLeaf(closed: ClosedLeaf, resolverDir: string, now: number): { who: string; node?: string; kind: RefusalKind; why: string } {
  let claims: ReturnType<typeof decode<User>> | undefined;
  try {
    claims = closed.jwt ? decode<User>(closed.jwt) : undefined;
  } catch {
    claims = undefined;
  }
  const name = claims?.name ?? closed.name ?? "";
  const node = nodeNamePattern.test(name) ? name : undefined;
  // A name that is no node name is the peer's text: quoted and cut short, never spliced into the line as it came.
  const who = node ? `node '${node}'` : `a leaf calling itself ${JSON.stringify(name.slice(0, 64))}`;
  if (!claims?.sub) return { who, node, kind: "no-credentials", why: "it presented no user JWT that can be read (no node's credentials)" };
  const account = claims.nats?.issuer_account || claims.iss;
  const accountFile = join(resolverDir, `${account}.jwt`);
  if (!/^A[A-Z2-7]{55}$/.test(account ?? "") || !existsSync(accountFile)) {
    return { who, node, kind: "unknown-account", why: `its credentials are of account ${String(account).slice(0, 60)}, which this site does not hold (another mesh's credentials, or a node issued after the site bundle: issue the site again with it, leafmesh keys issue-site --members …)` };
  }
  let revocations: Record<string, number> = {};
  try {
    revocations = decode<Account>(readFileSync(accountFile, "utf8").trim()).nats.revocations ?? {};
  } catch {
    revocations = {}; // not a JWT: nothing to tell from it
  }
  const revokedAt = Math.max(revocations[claims.sub] ?? 0, revocations["*"] ?? 0);
  if (revokedAt > 0 && claims.iat <= revokedAt) {
    return {
      who,
      node,
      kind: "revoked",
      why: `it is revoked: its credentials (user ${claims.sub}) were revoked at ${new Date(revokedAt * 1000).toISOString()} (keys revoke, pushed at the hubs), and every login with them is refused until the node has new ones (a node that joined with a token joins again; an issued one gets its new bundle)`,
    };
  }
  if (claims.exp && claims.exp * 1000 <= now) return { who, node, kind: "expired", why: `its credentials expired at ${new Date(claims.exp * 1000).toISOString()} (leafmesh keys issue gives new ones)` };
  return { who, node, kind: "other", why: "its credentials are neither revoked nor expired by the accounts this site holds (the site server's debug log says why: a clock behind, the account's connection limits)" };
}

/** @default 60_000 — a refusal is said once a minute per node and reason; the rest are counted into it. */
const sayEveryMs = 60_000;
/** @default 200 ms — between two monitor lookups: a fleet of refused nodes, each retrying every second, is read in turn. */
const lookupSpacingMs = 200;
/** The closed record is saved just after the line is written: looked for this many times, this far apart. */
const lookupTries = 3;
const lookupRetryMs = 150;

export interface RefusedLeafs {
  /** Takes a line of the server's log; a refused leaf login is looked up and said. */
  note(line: string): void;
  /** Refused logins by reason ("revoked edge-j", "unexplained"), bounded. */
  counts(): ReadonlyMap<string, number>;
  stop(): void;
}

export function watchRefusedLeafs(options: { closedLeaf: (cid: number) => Promise<ClosedLeaf | undefined>; resolverDir: string; log: Logger; now?: () => number }): RefusedLeafs {
  const now = options.now ?? Date.now;
  const repeats = new Repeats({ everyMs: sayEveryMs, kinds: 256, now: () => performance.now() });
  const counts = new Map<string, number>();
  const count = (key: string) => {
    const counted = counts.has(key) || counts.size < 100 ? key : "other refusals";
    counts.set(counted, (counts.get(counted) ?? 0) + 1);
  };
  /** The newest refused connection waiting to be looked up (older ones it replaced are counted as skipped). */
  let waiting: { cid: number; from: string } | undefined;
  let busy = false;
  let stopped = false;
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms).unref());

  const lookUp = async (cid: number): Promise<ClosedLeaf | undefined> => {
    for (let attempt = 0; attempt < lookupTries && !stopped; attempt++) {
      const closed = await options.closedLeaf(cid);
      if (closed) return closed;
      await pause(lookupRetryMs);
    }
    return undefined;
  };

  const say = (from: string, closed: ClosedLeaf | undefined) => {
    if (!closed) {
      count("unexplained");
      const since = repeats.note(`unexplained ${from.replace(/:\d+$/, "")}`);
      if (since !== undefined) options.log.warn({ from, ...(since > 0 ? { repeatsSinceLastSaid: since } : {}) }, `refused a leaf login from ${from}: its closed connection is no longer on the server's monitor, so who it was is not known`);
      return;
    }
    const refusal = explainRefusedLeaf(closed, options.resolverDir, now());
    count(`${refusal.kind} ${refusal.node ?? "(not a node name)"}`);
    const since = repeats.note(`${refusal.node ?? "?"} ${refusal.kind}`);
    if (since === undefined) return;
    options.log.warn(
      { refusedNode: refusal.node, from, refusal: refusal.kind, denied: true, ...(since > 0 ? { repeatsSinceLastSaid: since } : {}) },
      `refused the login of ${refusal.who} (a leaf from ${from}): ${refusal.why}${since > 0 ? ` (and ${since} more like it since this was last said)` : ""}`,
    );
  };

  const drain = async () => {
    busy = true;
    try {
      while (waiting && !stopped) {
        const { cid, from } = waiting;
        waiting = undefined;
        let closed: ClosedLeaf | undefined;
        try {
          closed = await lookUp(cid);
        } catch (error) {
          options.log.debug({ err: describeError(error), cid }, "refused leaf not looked up");
        }
        if (!stopped) say(from, closed);
        await pause(lookupSpacingMs);
      }
    } finally {
      busy = false;
    }
  };

  return {
    note(line) {
      const refused = /(\S+:\d+) - lid:(\d+) - authentication error\b/.exec(line);
      if (!refused || stopped) return;
      if (waiting) count("skipped (another refusal came before it was looked up)");
      waiting = { cid: Number(refused[2]), from: refused[1] };
      if (!busy) void drain();
    },
    counts: () => counts,
    stop() {
      stopped = true;
    },
  };
}
