/**
 * Pushes account JWTs to running hubs through the system account
 * (`$SYS.REQ.CLAIMS.UPDATE`). The full resolver stores them and applies them at
 * once: a revocation closes the revoked user's connections without a restart
 * (docs/nats-facts.md: ~6 ms), and cluster members pass the update on among themselves.
 *
 * ```ts
 * await pushAccountClaims({ servers: ["tls://hub-1:4222"], connectOptions: hub.systemConnectOptions, jwts: [accountJwt] });
 * ```
 */
import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import type { Account } from "@nats-io/jwt";
import type { Logger } from "../lib/log.ts";
import { openRevocationsBucket, publishRevocationList } from "./revocations.ts";
import { LeafmeshError, describeError } from "../lib/errors.ts";
import { accountRevocations, listHeldAccounts, lookupAccountJwt, revocationsLacking, takeBackCertificates, takeBackRevocations } from "./hub-revocations.ts";
import { revocationListKey } from "../bus/subjects.ts";
import { claimsSignedHere, verifiedClaims } from "./jwt-claims.ts";

export interface PushResult {
  account: string;
  server: string;
  message: string;
}

export async function pushAccountClaims(options: {
  servers: string[];
  connectOptions: Partial<ConnectionOptions>;
  jwts: string[];
  timeoutMs?: number;
  /**
   * The keys directory that signed `jwts`: a revocation the hubs hold and a JWT lacks (a directory restored
   * from a backup) is written back into it and signed in again before the push (hub-revocations.ts).
   */
  keysDir?: string;
  /** Told what was taken back from the hubs. */
  say?: (line: string) => void;
}): Promise<PushResult[]> {
  const timeout = options.timeoutMs ?? 5_000;
  let connection;
  try {
    connection = await connect({ ...options.connectOptions, servers: options.servers, timeout, reconnect: false, name: "leafmesh keys" });
  } catch (cause) {
    throw new LeafmeshError("NATS_UNREACHABLE", `cannot reach a hub at ${options.servers.join(", ")} as the system user to push account updates: ${describeError(cause)}`, { cause });
  }
  const results: PushResult[] = [];
  try {
    const jwts = options.keysDir ? await keepHubRevocations(connection, options.keysDir, options.jwts, timeout, options.say) : options.jwts;
    for (const jwt of jwts) {
      const account = claimsSignedHere(jwt).sub;
      let reply;
      try {
        reply = await connection.request("$SYS.REQ.CLAIMS.UPDATE", jwt, { timeout });
      } catch (cause) {
        throw new LeafmeshError("NATS_DENIED", `the hub did not answer the update of account ${account} (no full resolver there, or not the system user?): ${describeError(cause)}`, { cause });
      }
      const body = reply.json<{ server?: { name?: string }; data?: { code?: number; message?: string }; error?: { code?: number; description?: string } }>();
      if (body.error || (body.data?.code !== undefined && body.data.code >= 300)) {
        throw new LeafmeshError("TRUST_FAILED", `hub ${body.server?.name ?? "?"} refused the update of account ${account}: ${body.error?.description ?? body.data?.message ?? JSON.stringify(body)}`);
      }
      results.push({ account, server: body.server?.name ?? "?", message: body.data?.message ?? "" });
    }
  } finally {
    await connection.close();
  }
  return results;
}

/**
 * `jwts`, with those that would drop a revocation the hub holds signed again with it (their directory's state.json updated).
 * The JWTs offered were signed with `dir` and are read as they are; what the hub holds is checked once per JWT text
 * (trust/jwt-claims.ts), and it is mostly what this hub pushed last: a push costs what changed, not the whole mesh.
 */
async function keepHubRevocations(connection: NatsConnection, dir: string, jwts: string[], timeoutMs: number, say?: (line: string) => void): Promise<string[]> {
  const lacking = new Map<string, Record<string, number>>();
  const heldAccounts = await listHeldAccounts(connection, timeoutMs);
  const heldRevocations = new Map<string, Record<string, number> | undefined>();
  for (const jwt of jwts) {
    const offered = claimsSignedHere<Account>(jwt);
    const account = offered.sub;
    if (!heldAccounts.has(account)) continue;
    // An account offered twice (a new one as created, then its last JWT) is looked up once.
    if (!heldRevocations.has(account)) {
      const held = await lookupAccountJwt(connection, account, timeoutMs);
      heldRevocations.set(account, held ? accountRevocations(verifiedClaims<Account>(held)) : undefined);
    }
    const held = heldRevocations.get(account);
    if (!held) continue;
    const missing = revocationsLacking(held, accountRevocations(offered));
    if (Object.keys(missing).length > 0) lacking.set(account, { ...lacking.get(account), ...missing });
  }
  if (lacking.size === 0) return jwts;
  const taken = await takeBackRevocations(dir, lacking);
  for (const line of taken.said) say?.(line);
  return jwts.map((jwt) => taken.jwts.get(claimsSignedHere(jwt).sub) ?? jwt);
}

/**
 * Puts the signed revocation list into running hubs' `mesh-revocations` bucket (as the hub's own
 * publisher, mesh account), unless it holds a newer one; agents mirror it from there.
 */
export async function pushRevocationList(options: {
  servers: string[];
  connectOptions: Partial<ConnectionOptions>;
  signed: Uint8Array;
  caCertPem: string;
  log: Logger;
  timeoutMs?: number;
  /** The keys directory that signed `signed`: certificates the hubs' list names and it lacks are taken back into it (hub-revocations.ts). */
  keysDir?: string;
  say?: (line: string) => void;
}): Promise<number> {
  let connection;
  try {
    connection = await connect({ ...options.connectOptions, servers: options.servers, timeout: options.timeoutMs ?? 5_000, reconnect: false, name: "leafmesh keys" });
  } catch (cause) {
    throw new LeafmeshError("NATS_UNREACHABLE", `cannot reach a hub at ${options.servers.join(", ")} to publish the revocation list: ${describeError(cause)}`, { cause });
  }
  try {
    const kv = await openRevocationsBucket(connection);
    let signed = options.signed;
    if (options.keysDir) {
      const held = await kv.get(revocationListKey);
      const taken = held?.value.length ? await takeBackCertificates(options.keysDir, held.value, signed, options.caCertPem) : undefined;
      if (taken) {
        signed = taken.signed;
        options.say?.(taken.said);
      }
    }
    return await publishRevocationList({ kv, signed, caCertPem: options.caCertPem, log: options.log });
  } catch (cause) {
    if (cause instanceof LeafmeshError && cause.code === "TRUST_FAILED") throw cause;
    throw new LeafmeshError("TRUST_FAILED", `the hubs at ${options.servers.join(", ")} did not take the revocation list: ${describeError(cause)}`, { cause });
  } finally {
    await connection.close();
  }
}
