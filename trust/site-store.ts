/**
 * Edge sites in the keys directory (`leafmesh keys issue-site`): a site's servers
 * issued as nodes of their own, a user the site holds in each member node's
 * account, the site's TLS identity, and the bundle its servers load
 * (trust/site-security.ts). Split from key-store.ts, which keeps the nodes.
 */
import { copyFileSync, existsSync, readdirSync } from "node:fs";
import { ensureSiteClaimsAccount, revokeOldSiteSystemUser, siteClaimsCreds, siteClaimsCredsFile } from "./site-claims.ts";
import { newRouteSecret, siteRouteSecretFile } from "./route-credentials.ts";
import { join } from "node:path";
import { createUser, fmtCreds } from "@nats-io/jwt";
import { LeafmeshError } from "../lib/errors.ts";
import { checkNodeName } from "../bus/subjects.ts";
import { makePrivateDir, writeFileWhole, writeSecretFile } from "./secret-files.ts";
import { issueCertificate } from "./tls.ts";
import { meshAccountName, nodeAccountName, nodeUserJwt, siteLocalUserJwt } from "./claims.ts";
import { readKeyState, readSeed, resignMeshAccount, resignNodeAccount, seedFile, serverOfSite, writeKeyState, type SiteState } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { withKeysLock } from "./keys-lock.ts";

export function siteBundleDir(dir: string, site: string): string {
  return join(dir, "sites", site);
}

export interface IssueSiteOptions {
  dir: string;
  site: string;
  /** The site's server names. @default [site] */
  servers?: string[];
  /** Issued nodes whose agents attach to this site. */
  members: string[];
  /** Names and IPs in the site's TLS certificate (what its agents dial). @default [site, "localhost", "127.0.0.1", "::1"] */
  hosts?: string[];
}

export interface IssueSiteResult {
  site: SiteState;
  bundleDir: string;
  /** Account JWTs that changed (servers issued as nodes for the first time): push them to running hubs. */
  changedAccounts: string[];
}

/**
 * Issues (or re-issues) an edge site: its servers as nodes of their own, and the
 * site bundle: the public account JWTs its servers verify agents with, a TLS
 * identity, a user in each member's account (one leaf remote each, so per-node
 * isolation holds through the site), a system user (revocations pushed at the
 * hubs reach the site's resolver) and a loopback-only user for the site's own
 * process. Re-run it when members change, then restart the site's servers one by
 * one (leaf remotes cannot be changed by reload, docs/nats-facts.md). Holds the keys directory's lock.
 */
export async function issueSite(options: IssueSiteOptions): Promise<IssueSiteResult> {
  return withKeysLock(options.dir, () => issueSiteHeld(options));
}

async function issueSiteHeld(options: IssueSiteOptions): Promise<IssueSiteResult> {
  const { dir } = options;
  const site = checkNodeName(options.site, "--site");
  const servers = [...new Set((options.servers?.length ? options.servers : [site]).map((server) => checkNodeName(server, "--servers")))];
  const members = [...new Set(options.members.map((member) => checkNodeName(member, "--members")))];
  let state = readKeyState(dir);
  for (const member of members) {
    if (!state.nodes[member]) throw new LeafmeshError("TRUST_FAILED", `member '${member}' of site '${site}' was never issued: \`leafmesh keys issue --dir ${dir} --node ${member}\` first`);
    if (servers.includes(member)) throw new LeafmeshError("CONFIG_INVALID", `'${member}' cannot be both a server and a member of site '${site}'`);
  }
  for (const [other, entry] of Object.entries(state.sites ?? {})) {
    if (other === site) continue;
    const shared = entry.members.filter((member) => members.includes(member));
    if (shared.length > 0) throw new LeafmeshError("CONFIG_INVALID", `${shared.join(", ")} already belong to site '${other}': a node attaches to one site`);
  }
  const changedAccounts: string[] = [];
  for (const server of servers) {
    if (state.nodes[server]) continue;
    const issued = await issueNode({ dir, node: server, hosts: options.hosts });
    changedAccounts.push(...issued.changedAccounts);
  }
  state = readKeyState(dir);
  const entry: SiteState = { site, servers, members, issuedAt: new Date().toISOString() };
  state.sites = { ...state.sites, [site]: entry };
  // A clustered site's mirror delivers under the site's prefix (claims.ts NodeAccountRef.site): its
  // servers' accounts import it and the mesh account exports it, so both are signed again.
  if (servers.some((server) => server !== site)) {
    for (const server of servers) changedAccounts.push(await resignNodeAccount(dir, state, state.nodes[server]));
    changedAccounts.push(await resignMeshAccount(dir, state));
  }

  // Account updates reach the site through `site-claims`, not a system-account user (trust/site-claims.ts);
  // the one an older bundle of this site holds is revoked.
  const bundle = siteBundleDir(dir, site);
  changedAccounts.push(...(await ensureSiteClaimsAccount(dir)));
  changedAccounts.push(...(await revokeOldSiteSystemUser(dir, bundle)));
  state.siteClaimsAccount = readKeyState(dir).siteClaimsAccount;

  for (const sub of ["", "accounts", "servers", "members"]) makePrivateDir(join(bundle, sub));
  copyFileSync(join(dir, "operator.jwt"), join(bundle, "operator.jwt"));
  copyFileSync(join(dir, "ca", "ca.crt"), join(bundle, "ca.crt"));
  for (const file of readdirSync(join(dir, "accounts")).filter((name) => name.endsWith(".jwt"))) copyFileSync(join(dir, "accounts", file), join(bundle, "accounts", file));
  await issueCertificate({
    caCertFile: join(dir, "ca", "ca.crt"),
    caKeyFile: join(dir, "ca", "ca.key"),
    certFile: join(bundle, "site.crt"),
    keyFile: join(bundle, "site.key"),
    commonName: site,
    hosts: options.hosts ?? [site, "localhost", "127.0.0.1", "::1"],
  });
  const seedText = (key: { getSeed(): Uint8Array }) => new TextDecoder().decode(key.getSeed());
  for (const server of servers) {
    // The server's own user, allowed the site's mirror deliveries as well as its own subjects.
    const user = createUser();
    const jwt = await nodeUserJwt({ node: server, userSeed: seedText(user), accountSeed: readSeed(seedFile(dir, nodeAccountName(server))), site: serverOfSite(state, server) });
    writeSecretFile(join(bundle, "servers", `${server}.creds`), fmtCreds(jwt, user));
  }
  for (const member of members) {
    const user = createUser();
    const jwt = await nodeUserJwt({ node: member, userSeed: seedText(user), accountSeed: readSeed(seedFile(dir, nodeAccountName(member))) });
    writeSecretFile(join(bundle, "members", `${member}.creds`), fmtCreds(jwt, user));
  }
  // Kept from the first issue: servers restarted one by one with a new bundle must still route with the others.
  if (!existsSync(join(bundle, siteRouteSecretFile))) writeSecretFile(join(bundle, siteRouteSecretFile), `${newRouteSecret()}\n`);
  writeSecretFile(join(bundle, siteClaimsCredsFile), await siteClaimsCreds(dir, site));
  const localUser = createUser();
  writeSecretFile(join(bundle, "local.creds"), fmtCreds(await siteLocalUserJwt({ site, userSeed: seedText(localUser), accountSeed: readSeed(seedFile(dir, meshAccountName)) }), localUser));
  const description: SiteDescription = {
    site,
    servers,
    members: Object.fromEntries(members.map((member) => [member, state.nodes[member].account])),
    systemAccount: state.systemAccount,
    meshAccount: state.meshAccount,
  };
  writeFileWhole(join(bundle, "site.json"), `${JSON.stringify(description, null, 2)}\n`);
  writeKeyState(dir, state);
  return { site: entry, bundleDir: bundle, changedAccounts };
}

/** `site.json` in a site bundle: no secrets, what a site server's config is made from. */
export interface SiteDescription {
  site: string;
  servers: string[];
  /** Member node → its account's public key. */
  members: Record<string, string>;
  systemAccount: string;
  meshAccount: string;
}
