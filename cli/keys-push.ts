/**
 * What `leafmesh keys` sends to running hubs (--hub): account JWTs through the system account, and the
 * signed revocation list that every agent mirrors. A push that fails says the change is kept in the
 * keys directory and how to push it later (`keys push`).
 */
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { splitList, type CommandIO } from "./command.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { silentLogger } from "../lib/log.ts";
import type { RevokeResult } from "../trust/node-credentials.ts";
import { loadHubSecurity } from "../trust/security.ts";
import { pushAccountClaims, pushRevocationList } from "../trust/push.ts";

export async function pushTo(dir: string, hubs: string | undefined, jwts: string[], io: CommandIO, advise = true): Promise<void> {
  const servers = splitList(hubs);
  if (servers.length === 0) {
    io.stdout.write(`not pushed to any hub (no --hub): running hubs apply it at their next start, or push it with \`leafmesh keys push --dir ${dir} --hub URL\`\n`);
    return;
  }
  // The system user with the hub's TLS identity; the resolver dir is not used here.
  const security = loadHubSecurity(dir, { resolverDir: join(dir, "unused") });
  const push = () => pushAccountClaims({ servers, connectOptions: security.systemConnectOptions, jwts, keysDir: dir, say: (line) => io.stderr.write(`${line}\n`) });
  const results = advise ? await keptIfUnpushed(dir, servers, push) : await push();
  for (const result of results) io.stdout.write(`pushed account ${result.account} to hub ${result.server}: ${result.message}\n`);
}

/** A push that fails says that the change is kept in the directory, and how to push it later (a second revoke or issue would be refused). */
async function keptIfUnpushed<T>(dir: string, servers: string[], push: () => Promise<T>): Promise<T> {
  try {
    return await push();
  } catch (error) {
    if (!(error instanceof LeafmeshError)) throw error;
    throw new LeafmeshError(
      error.code,
      `${error.message}. The change is kept in ${dir}: push it when a hub answers with \`leafmesh keys push --dir ${dir} --hub ${servers.join(",")}\` (hubs also apply it at their next start)`,
      { cause: error },
    );
  }
}

/** A revocation to running hubs: the account's revocations, then the signed list agents mirror. */
export async function pushRevocation(dir: string, hubs: string | undefined, node: string, revoked: RevokeResult, io: CommandIO): Promise<void> {
  await pushTo(dir, hubs, [revoked.accountJwt], io);
  const servers = splitList(hubs);
  if (servers.length === 0) return;
  const version = await publishList(dir, servers, revoked.revocationList, io);
  io.stdout.write(`revocation list version ${version} published to the hubs: agents refuse ${node}'s certificate once it reaches them\n`);
}

/** The signed revocation list to the hubs, from where every agent mirrors it (its LAN and punched peers enforce it). */
export async function publishList(dir: string, servers: string[], signed: Uint8Array, io: CommandIO, advise = true): Promise<number> {
  const security = loadHubSecurity(dir, { resolverDir: join(dir, "unused") });
  const publish = () =>
    pushRevocationList({ servers, connectOptions: security.publisherConnectOptions, signed, caCertPem: readFileSync(join(dir, "ca", "ca.crt"), "utf8"), log: silentLogger(), keysDir: dir, say: (line) => io.stderr.write(`${line}\n`) });
  return advise ? keptIfUnpushed(dir, servers, publish) : publish();
}
