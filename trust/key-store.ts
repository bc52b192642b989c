/**
 * The mesh's root of trust on disk (`leafmesh keys --dir D`), and what hubs and
 * agents load from it at start.
 *
 * Layout of D (everything secret is 0600, directories 0700):
 *
 *   state.json                     nodes issued, their user keys, revocations (no secrets)
 *   operator.seed  operator.jwt    the operator: signs accounts
 *   accounts/<name>.seed|.jwt      SYS, mesh, node-<node> (account seeds stay here)
 *   hub/sys.creds                  pushes account updates (revocations) to running hubs
 *   hub/publisher.creds            the hub's catalog publisher (the mesh account)
 *   hub/ca.crt hub/hub.crt hub/hub.key   the hubs' TLS identity
 *   hub/audit/<node>.creds         the hub's auditor inside each node account (listens only)
 *   ca/ca.crt ca/ca.key            the mesh CA (keep ca.key offline in production)
 *   swarm.key                      the libp2p pre-shared key (@libp2p/pnet format)
 *   nodes/<node>/                  the bundle to copy to that node:
 *       node.creds node.crt node.key ca.crt swarm.key
 *   sites/<site>/                  the bundle to copy to a site's servers (trust/site-security.ts):
 *       site.json operator.jwt accounts/*.jwt ca.crt site.crt site.key claims.creds local.creds routes.secret
 *       servers/<server>.creds members/<node>.creds
 *
 * ```ts
 * await initKeys({ dir });
 * await issueNode({ dir, node: "edge-a" });      // node-credentials.ts
 * const hub = await loadHubSecurity(dir);          // config fragment + files for nats-server
 * const agent = loadNodeSecurity(dir, "edge-a");   // remote fragment, local auth, connect options, psk
 * ```
 */
import { randomBytes, X509Certificate } from "node:crypto";
import { existsSync, readFileSync, readdirSync, copyFileSync } from "node:fs";
import { join, resolve } from "node:path";
import * as z from "../lib/schema/index.ts";
import { createAccount, createOperator, createUser, fmtCreds, decode, type Account, type User } from "@nats-io/jwt";
import { claimsSignedHere, verifiedClaims } from "./jwt-claims.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { checkSecretFilePermissions, makePrivateDir, writeFileWhole, writeSecretFile } from "./secret-files.ts";
import { createCertificateAuthority, issueCertificate } from "./tls.ts";
import type { RevocationList } from "./revocation-list.ts";
import { withKeysLock } from "./keys-lock.ts";
import {
  meshAccountJwt,
  meshAccountName,
  meshUserJwt,
  nodeAccountJwt,
  nodeAccountName,
  operatorJwt,
  systemAccountJwt,
  systemAccountName,
  systemUserJwt,
  auditUserJwt,
} from "./claims.ts";

export interface NodeState {
  node: string;
  /** The node account's public key (A...). */
  account: string;
  /** The current user's public key (U...); undefined after a revocation until the next issue. */
  user?: string;
  issuedAt: string;
  expiresAt?: string;
  /** Revoked user keys → unix seconds of the revocation (the account JWT's `revocations`). */
  revocations: Record<string, number>;
  /** SHA-256 fingerprint of the node's current TLS certificate (trust/revocation-list.ts); undefined after a revocation. */
  certificate?: string;
  /** Its earlier certificates replaced by renewal (trust/renewal-service.ts), fingerprint and end: those not yet ended are revoked with the current one. */
  renewedFrom?: { certificate: string; ends: string }[];
  /** The token the node joined with (`agent --join`, trust/enrolment.ts; undefined: `keys issue`), and the site and tags it gave. */
  enrolledBy?: string;
  site?: string;
  tags?: string[];
}

export interface KeyState {
  version: 1;
  operator: string;
  systemAccount: string;
  meshAccount: string;
  nodes: Record<string, NodeState>;
  /** Edge sites issued with `keys issue-site`: their servers (nodes of their own) and member nodes. */
  sites?: Record<string, SiteState>;
  /** Revoked node certificates, as the signed list hubs publish and agents enforce (trust/revocation-list.ts). */
  revokedCertificates?: RevocationList["revoked"];
  /** The signed list's version: one more with every revocation. */
  revocationVersion?: number;
  /** The enrol account's public key (made by the first `keys token` or `hub --enrol`: trust/enrolment.ts). */
  enrolAccount?: string;
  /** The account sites take account updates through (made by the first `keys issue-site`: trust/site-claims.ts). */
  siteClaimsAccount?: string;
  /** Join tokens (trust/tokens.ts), by id. */
  tokens?: Record<string, import("./tokens.ts").TokenState>;
}

export interface SiteState {
  site: string;
  /** The site's servers: each is a node of its own (its account carries the site's catalog mirror and status). */
  servers: string[];
  /** Nodes whose agents attach to this site: the site holds a user in each one's account. */
  members: string[];
  issuedAt: string;
}

const stateFile = (dir: string) => join(dir, "state.json");
export const seedFile = (dir: string, account: string) => join(dir, "accounts", `${account}.seed`);
export const jwtFile = (dir: string, account: string) => join(dir, "accounts", `${account}.jwt`);

export function nodeBundleDir(dir: string, node: string): string {
  return join(dir, "nodes", node);
}

export function readKeyState(dir: string): KeyState {
  const path = stateFile(dir);
  if (!existsSync(path)) throw new LeafmeshError("TRUST_FAILED", `${resolve(dir)} holds no mesh keys (no state.json): run \`leafmesh keys init --dir ${dir}\` first`);
  let content: unknown;
  try {
    content = JSON.parse(readFileSync(path, "utf8"));
  } catch (cause) {
    throw new LeafmeshError("TRUST_FAILED", `${resolve(path)} is not readable mesh state (${(cause as Error).message}): restore it from a backup of the keys directory`, { cause });
  }
  // Parsed JSON of the wrong shape ended commands with a TypeError and a stack, and `{"nodes":{}}` was taken as a
  // mesh with no nodes: the next issue signed the mesh account without them and forgot every revocation.
  const checked = keyStateShape.safeParse(content);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    throw new LeafmeshError(
      "TRUST_FAILED",
      `${resolve(path)} is not whole mesh state (${issue.path.length > 0 ? issue.path.join(".") : "the whole file"}: ${issue.message}): restore it from a backup of the keys directory`,
    );
  }
  return content as KeyState;
}

/** What every state.json has (older ones included); other fields are optional and kept as they are. */
const keyStateShape = z
  .object({
    operator: z.string().min(1),
    systemAccount: z.string().min(1),
    meshAccount: z.string().min(1),
    nodes: z.record(
      z.string(),
      z.object({ node: z.string().min(1), account: z.string().min(1), user: z.string().optional(), revocations: z.record(z.string(), z.number()) }).passthrough(),
    ),
  })
  .passthrough();

/**
 * For the other stores of the keys directory (site-store.ts). Written whole or not at all (a new file
 * renamed over it): a full disk or a crash leaves the previous state.json, with every revocation in it.
 */
export function writeKeyState(dir: string, state: KeyState): void {
  writeSecretFile(stateFile(dir), `${JSON.stringify(state, null, 2)}\n`);
}

export function readSeed(path: string): string {
  checkSecretFilePermissions(path);
  return readFileSync(path, "utf8").trim();
}

export interface InitOptions {
  dir: string;
  /** Host names and IPs the hubs' certificate is valid for. @default ["localhost", "127.0.0.1", "::1"] */
  hubHosts?: string[];
}

/** Creates the operator, the SYS and mesh accounts, the hub users, the CA, the hub certificate and the PSK. Refuses to overwrite. */
export async function initKeys(options: InitOptions): Promise<KeyState> {
  const { dir } = options;
  if (existsSync(stateFile(dir))) throw new LeafmeshError("TRUST_FAILED", `${resolve(dir)} already holds mesh keys: refusing to overwrite them (use another --dir)`);
  makePrivateDir(dir);
  for (const sub of ["accounts", "hub", "ca", "nodes"]) makePrivateDir(join(dir, sub));

  const operator = createOperator();
  const systemAccount = createAccount();
  const meshAccount = createAccount();
  const seedText = (key: { getSeed(): Uint8Array }) => new TextDecoder().decode(key.getSeed());
  writeSecretFile(join(dir, "operator.seed"), seedText(operator));
  writeSecretFile(seedFile(dir, systemAccountName), seedText(systemAccount));
  writeSecretFile(seedFile(dir, meshAccountName), seedText(meshAccount));

  const state: KeyState = { version: 1, operator: operator.getPublicKey(), systemAccount: systemAccount.getPublicKey(), meshAccount: meshAccount.getPublicKey(), nodes: {} };
  writeFileWhole(join(dir, "operator.jwt"), await operatorJwt({ operatorSeed: seedText(operator), systemAccount: state.systemAccount }));
  writeFileWhole(jwtFile(dir, systemAccountName), await systemAccountJwt({ operatorSeed: seedText(operator), accountSeed: seedText(systemAccount) }));
  writeFileWhole(jwtFile(dir, meshAccountName), await meshAccountJwt({ operatorSeed: seedText(operator), accountSeed: seedText(meshAccount), nodes: [] }));

  const sysUser = createUser();
  writeSecretFile(join(dir, "hub", "sys.creds"), fmtCreds(await systemUserJwt({ userSeed: seedText(sysUser), accountSeed: seedText(systemAccount) }), sysUser));
  const publisher = createUser();
  writeSecretFile(join(dir, "hub", "publisher.creds"), fmtCreds(await meshUserJwt({ name: "publisher", userSeed: seedText(publisher), accountSeed: seedText(meshAccount) }), publisher));

  await createCertificateAuthority({ certFile: join(dir, "ca", "ca.crt"), keyFile: join(dir, "ca", "ca.key"), name: "leafmesh mesh CA" });
  copyFileSync(join(dir, "ca", "ca.crt"), join(dir, "hub", "ca.crt"));
  await issueCertificate({
    caCertFile: join(dir, "ca", "ca.crt"),
    caKeyFile: join(dir, "ca", "ca.key"),
    certFile: join(dir, "hub", "hub.crt"),
    keyFile: join(dir, "hub", "hub.key"),
    commonName: "leafmesh hub",
    hosts: options.hubHosts ?? ["localhost", "127.0.0.1", "::1"],
  });

  // @libp2p/pnet's swarm.key format, written here: the agent loads this module, and libp2p only with its tunnel.
  const swarmKey = Buffer.from(`/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString("hex")}`);
  writeSecretFile(join(dir, "swarm.key"), swarmKey);

  writeKeyState(dir, state);
  return state;
}

/** The site `node` is a server of, when that site's name is not its own (NodeAccountRef.site). */
export function serverOfSite(state: KeyState, node: string): string | undefined {
  return Object.values(state.sites ?? {}).find((site) => site.site !== node && site.servers.includes(node))?.site;
}

/** Re-signs the mesh account (it imports from every node account, revoked or not: their accounts stay, their users go). */
export async function resignMeshAccount(dir: string, state: KeyState): Promise<string> {
  const jwt = await meshAccountJwt({
    operatorSeed: readSeed(join(dir, "operator.seed")),
    accountSeed: readSeed(seedFile(dir, meshAccountName)),
    nodes: Object.values(state.nodes).map(({ node, account }) => ({ node, account, site: serverOfSite(state, node) })),
  });
  writeFileWhole(jwtFile(dir, meshAccountName), jwt);
  return jwt;
}

export async function resignNodeAccount(dir: string, state: KeyState, node: NodeState): Promise<string> {
  const jwt = await nodeAccountJwt({
    node: node.node,
    operatorSeed: readSeed(join(dir, "operator.seed")),
    accountSeed: readSeed(seedFile(dir, nodeAccountName(node.node))),
    meshAccount: state.meshAccount,
    peers: Object.values(state.nodes).map(({ node: peer, account }) => ({ node: peer, account })),
    revocations: node.revocations,
    site: serverOfSite(state, node.node),
  });
  writeFileWhole(jwtFile(dir, nodeAccountName(node.node)), jwt);
  return jwt;
}

/**
 * Signs every account again with this leafmesh's claims (node accounts first, then mesh), keeping
 * their revocations, for a mesh whose keys an older leafmesh made (claims.ts
 * `outdatedAccountReason`, trust/outdated-accounts.ts). Returns the JWTs to push to running hubs. Users are not touched.
 */
export async function resignAccounts(dir: string): Promise<string[]> {
  return withKeysLock(dir, async () => {
    const state = readKeyState(dir);
    const jwts: string[] = [];
    for (const node of Object.values(state.nodes)) jwts.push(await resignNodeAccount(dir, state, node));
    jwts.push(await resignMeshAccount(dir, state));
    return jwts;
  });
}

/**
 * The node's entry, with its account made on first use: the account seed, every node account and
 * the mesh account signed again (each imports the newcomer), and the hub auditor's user in it.
 * Returns the account JWTs that changed (to push to running hubs); `state` is changed in place and
 * not written.
 */
export async function ensureNodeAccount(dir: string, state: KeyState, node: string): Promise<{ entry: NodeState; changedAccounts: string[] }> {
  const changedAccounts: string[] = [];
  let entry = state.nodes[node];
  if (!entry) {
    const account = createAccount();
    writeSecretFile(seedFile(dir, nodeAccountName(node)), new TextDecoder().decode(account.getSeed()));
    entry = { node, account: account.getPublicKey(), issuedAt: new Date().toISOString(), revocations: {} };
    state.nodes[node] = entry;
    // Every node account imports relay frames (and the punch service) from every other one: all are re-signed.
    // The new account goes first: a hub that meets an import from an account it does not know yet spends
    // seconds looking it up (docs/nats-facts.md), long enough for a push to time out.
    for (const other of [entry, ...Object.values(state.nodes).filter((candidate) => candidate !== entry)]) changedAccounts.push(await resignNodeAccount(dir, state, other));
    changedAccounts.push(await resignMeshAccount(dir, state));
    const auditor = createUser();
    makePrivateDir(join(dir, "hub", "audit"));
    const auditJwt = await auditUserJwt({ node, userSeed: new TextDecoder().decode(auditor.getSeed()), accountSeed: readSeed(seedFile(dir, nodeAccountName(node))) });
    writeSecretFile(join(dir, "hub", "audit", `${node}.creds`), fmtCreds(auditJwt, auditor));
  }
  return { entry, changedAccounts };
}

export interface NodeListing {
  node: string;
  account: string;
  user?: string;
  status: "active" | "revoked" | "expired";
  issuedAt: string;
  expiresAt?: string;
  revokedKeys: number;
  enrolledBy?: string;
  site?: string;
  tags?: string[];
  /** When the node's TLS certificate in the keys directory ends (ISO 8601); undefined when none is kept there (a joined node's). */
  certificateEnds?: string;
}

/** When the certificate in `file` ends (ISO 8601), or undefined when there is none to read. */
export function certificateEnds(file: string): string | undefined {
  try {
    return new Date(new X509Certificate(readFileSync(file)).validTo).toISOString();
  } catch {
    return undefined;
  }
}

export function listNodes(dir: string, now: () => number = Date.now): NodeListing[] {
  const state = readKeyState(dir);
  return Object.values(state.nodes)
    .sort((a, b) => a.node.localeCompare(b.node))
    .map((entry) => ({
      node: entry.node,
      account: entry.account,
      user: entry.user,
      status: !entry.user ? "revoked" : entry.expiresAt && Date.parse(entry.expiresAt) <= now() ? "expired" : "active",
      issuedAt: entry.issuedAt,
      expiresAt: entry.expiresAt,
      revokedKeys: Object.keys(entry.revocations).length,
      enrolledBy: entry.enrolledBy,
      site: entry.site,
      tags: entry.tags,
      certificateEnds: entry.user ? certificateEnds(join(dir, "nodes", entry.node, "node.crt")) : undefined,
    }));
}

/** Every account JWT of the mesh (for resolver_preload and pushes). */
export function allAccountJwts(dir: string): { account: string; jwt: string }[] {
  return readdirSync(join(dir, "accounts"))
    .filter((file) => file.endsWith(".jwt"))
    .map((file) => {
      const path = join(dir, "accounts", file);
      const jwt = readFileSync(path, "utf8").trim();
      try {
        // Checked (a damaged or altered file is said here), once per text: the hub reads them at every start and reload.
        return { account: verifiedClaims(jwt).sub, jwt };
      } catch (cause) {
        throw new LeafmeshError("TRUST_FAILED", `${resolve(path)} is damaged (not an account JWT: ${(cause as Error).message}): copy it again from the keys directory, or restore it from a backup`, { cause });
      }
    });
}

/**
 * Says why a user JWT would be refused, from what the key directory knows: the
 * hub tells a client only "Authorization Violation" (docs/nats-facts.md).
 */
export function explainUserKey(dir: string, userJwt: string, now: () => number = Date.now, resolverDir?: string): string {
  const claims = decode<User>(userJwt);
  const state = readKeyState(dir);
  const entry = Object.values(state.nodes).find((candidate) => candidate.account === claims.iss || candidate.account === claims.nats.issuer_account);
  if (!entry) return `credentials of '${claims.name}' are signed by account ${claims.iss}, which this mesh does not know (wrong credentials, or another mesh's)`;
  const revokedAt = entry.revocations[claims.sub];
  if (revokedAt !== undefined && claims.iat <= revokedAt) return `credentials of node '${entry.node}' (user ${claims.sub}) were revoked at ${new Date(revokedAt * 1000).toISOString()}`;
  if (claims.exp && claims.exp * 1000 <= now()) return `credentials of node '${entry.node}' expired at ${new Date(claims.exp * 1000).toISOString()}`;
  // A hub runs from a copy of the keys (state.json and all) that `keys revoke --hub` does not update: the account
  // pushed to its resolver holds the revocation. Said from the copy alone, a revoked node was "valid".
  const pushedAt = resolverDir ? pushedRevocation(join(resolverDir, `${entry.account}.jwt`), claims.sub) : undefined;
  if (pushedAt !== undefined && claims.iat <= pushedAt) {
    return `credentials of node '${entry.node}' (user ${claims.sub}) were revoked at ${new Date(pushedAt * 1000).toISOString()} (pushed to this hub; its keys in ${resolve(dir)} predate the revocation)`;
  }
  // The hub's resolver stores every account it holds (<resolverDir>/<account>.jwt). A node issued or enrolled whose
  // account has not reached this hub yet is refused like a stranger, and so is the hub auditor's own login in it
  // (bench/herd: `keys issue --hub` raced the auditor's rescan); said as a theft ("not its current ones"), it was not.
  const auditor = auditUserOf(dir, entry.node) === claims.sub;
  const who = auditor ? `the hub's trust auditor for node '${entry.node}' (${join("hub", "audit", `${entry.node}.creds`)})` : `credentials of node '${entry.node}'`;
  if (resolverDir && !existsSync(join(resolverDir, `${entry.account}.jwt`))) {
    return `${who}: refused because the node's account ${entry.account} is not on this hub yet (its push is pending; \`leafmesh keys push --dir ${resolve(dir)} --hub URL\` sends it if it was issued without --hub)`;
  }
  if (auditor) return `${who}: refused though the keys directory issued it${resolverDir ? " and its account is on this hub now (it arrived after the attempt?)" : " (its account not on this hub yet?)"}; the auditor tries again at its next rescan`;
  if (entry.user !== claims.sub) return `credentials of node '${entry.node}' are not its current ones (user ${claims.sub}, current ${entry.user ?? "none"})`;
  return `credentials of node '${entry.node}' are valid in ${resolve(dir)}, yet the server refused them: the keys there may be older than the mesh's (a revocation or a new key since); \`leafmesh keys list\` where the keys are made says`;
}

/** The user of the hub's auditor in `node`'s account (hub/audit/<node>.creds, made with the account); undefined when there is none. */
function auditUserOf(dir: string, node: string): string | undefined {
  const file = join(dir, "hub", "audit", `${node}.creds`);
  const jwt = existsSync(file) ? /-----BEGIN NATS USER JWT-----\s*(\S+)/.exec(readFileSync(file, "utf8"))?.[1] : undefined;
  return jwt ? claimsSignedHere(jwt).sub : undefined;
}

/** The time a user (or every user, "*") was revoked at in an account JWT the server holds; undefined when none. */
function pushedRevocation(accountJwtFile: string, user: string): number | undefined {
  if (!existsSync(accountJwtFile)) return undefined;
  try {
    const revocations = decode<Account>(readFileSync(accountJwtFile, "utf8").trim()).nats.revocations ?? {};
    const times = [revocations[user], revocations["*"]].filter((time): time is number => typeof time === "number");
    return times.length > 0 ? Math.max(...times) : undefined;
  } catch {
    return undefined; // not a JWT: the keys directory's word stands
  }
}

