/**
 * What a secured edge-site server loads at start (`leafmesh site --keys`), from
 * the site bundle `keys issue-site` writes.
 *
 * The shape (measured on nats-server 2.9.10, trust/site.test.ts):
 *
 * - The site server runs in operator mode with the mesh's operator and every
 *   account JWT preloaded (public data), so it checks its agents' node
 *   credentials exactly as a hub does, and the same per-node accounts with the
 *   same exports and imports hold on the site: a stolen node reaches no more
 *   through the site than through a hub.
 * - A leaf remote binds one local account to one hub account, so the site has
 *   one remote per account that must reach the hubs: its `mesh` account (the
 *   site's JetStream: the catalog mirror agents read) as the server's own node
 *   account at the hub (read-only catalog, like any node); one per member node,
 *   as a user the site holds in that node's account (its agent's records, events,
 *   rpc and relay frames to and from nodes elsewhere); and the system account,
 *   through which account updates pushed at the hubs (revocations) reach the
 *   site's resolver.
 * - Relay frames between two members stay on the site with no rule of ours: the
 *   site delivers them through the members' account imports, and the hub, which
 *   has the same imports, does not send that interest back down the remotes it
 *   came from (measured: 200 frames, each delivered once, none at the hub). No
 *   deny list either, so a member whose agent fails over to a hub is still
 *   reached from the site through the hub.
 *
 * ```ts
 * const site = loadSiteSecurity(bundleDir, { site: "shop", server: "shop-1", resolverDir });
 * renderLeafConfig({ ..., security: site.configFragment, leafSecurity: site.leafnodesFragment, remotes: site.remotes });
 * const local = await connect({ servers, ...site.clientConnectOptions });
 * ```
 */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { ConnectionOptions } from "@nats-io/transport-node";
import { LeafmeshError } from "../lib/errors.ts";
import type { LeafRemote } from "../nats/render.ts";
import { checkSecretFilePermissions } from "./secret-files.ts";
import { checkSiteBundleFiles } from "./bundle-files.ts";
import { allAccountJwts } from "./key-store.ts";
import { siteBundleDir, type SiteDescription } from "./site-store.ts";
import { newestAccountJwts, operatorLines, tlsBlock } from "./security.ts";
import { ownCertificateTls } from "./tls.ts";
import { credsFileAuthenticator } from "./native-authenticator.ts";
import { siteRouteCredentials, siteRouteSecretFile, type RouteCredentials } from "./route-credentials.ts";
import { siteClaimsCredsFile } from "./site-claims.ts";

export interface SiteSecurity {
  site: string;
  server: string;
  members: string[];
  /** Top level: operator, system account, full resolver with preloads, TLS with client certificates on the client port. */
  configFragment: string;
  /** Inside `leafnodes {}`: the agents' leaf connections, TLS with client certificates of the mesh CA. */
  leafnodesFragment: string;
  /** Inside `cluster {}`: routes between the site's servers, TLS both ways. */
  routesFragment: string;
  /**
   * What the site's routes present and ask (trust/route-credentials.ts), from the bundle's
   * `routes.secret`; undefined for a bundle an older leafmesh made (issue the site again).
   */
  routeCredentials?: RouteCredentials;
  /** One remote per account that reaches the hubs (see above). */
  remotes: LeafRemote[];
  /** Every account of the mesh but the system account: the site server resolves them all at start (nats-config/account-preload.ts). */
  accounts: string[];
  /** The site's own process on loopback: the mesh account (where the site's JetStream is). */
  clientConnectOptions: Partial<ConnectionOptions>;
  files: { bundle: string; cert: string; key: string; ca: string; operatorJwt: string; resolverDir: string };
}

function readCreds(path: string): Uint8Array {
  checkSecretFilePermissions(path);
  return readFileSync(path);
}

/**
 * Loads a site bundle: `dir` is the keys directory (then `sites/<site>` in it is
 * used) or the bundle copied to the site. Refuses secrets with loose permissions
 * and a server the bundle was not issued for.
 */
export function loadSiteSecurity(dir: string, options: { site: string; server: string; resolverDir: string }): SiteSecurity {
  const nested = siteBundleDir(resolve(dir), options.site);
  const bundle = existsSync(join(nested, "site.json")) ? nested : resolve(dir);
  const descriptionFile = join(bundle, "site.json");
  if (!existsSync(descriptionFile)) {
    throw new LeafmeshError("TRUST_FAILED", `no site bundle for site '${options.site}' in ${resolve(dir)} (site.json is missing: issue it with \`leafmesh keys issue-site --site ${options.site} --members ...\`)`);
  }
  checkSiteBundleFiles(bundle, { ...options, part: "description" });
  const description = JSON.parse(readFileSync(descriptionFile, "utf8")) as SiteDescription;
  if (description.site !== options.site) throw new LeafmeshError("CONFIG_INVALID", `the site bundle in ${bundle} is site '${description.site}', not '${options.site}' (--name)`);
  if (!description.servers.includes(options.server)) {
    throw new LeafmeshError("CONFIG_INVALID", `server '${options.server}' is not one of site '${options.site}''s servers (${description.servers.join(", ")}): re-issue with \`leafmesh keys issue-site --servers ...\``);
  }
  checkSiteBundleFiles(bundle, { ...options, part: "rest" });
  const files = {
    bundle,
    cert: join(bundle, "site.crt"),
    key: join(bundle, "site.key"),
    ca: join(bundle, "ca.crt"),
    operatorJwt: join(bundle, "operator.jwt"),
    resolverDir: resolve(options.resolverDir),
  };
  checkSecretFilePermissions(files.key);
  const tls = tlsBlock({ ...files, verify: true });
  const remoteTls = tlsBlock({ ...files, verify: false });
  const credentials = (file: string) => {
    checkSecretFilePermissions(file);
    return [`credentials: ${JSON.stringify(file)}`, ...remoteTls].join("\n");
  };
  const members = Object.keys(description.members).sort();
  const preload = newestAccountJwts(allAccountJwts(bundle), files.resolverDir);
  const remotes: LeafRemote[] = [
    { comment: `the site's JetStream (catalog mirror) as node '${options.server}' at the hubs`, account: description.meshAccount, security: credentials(join(bundle, "servers", `${options.server}.creds`)) },
    ...members.map((member) => ({
      comment: `member ${member}: its agent's own subjects, through its own account`,
      account: description.members[member],
      security: credentials(join(bundle, "members", `${member}.creds`)),
    })),
    // Through the hubs' `site-claims` account (trust/site-claims.ts); a bundle an older leafmesh made holds a system-account user instead.
    {
      comment: "system account: account updates (revocations) pushed at the hubs reach this site's resolver",
      account: description.systemAccount,
      security: credentials(join(bundle, existsSync(join(bundle, siteClaimsCredsFile)) ? siteClaimsCredsFile : "sys.creds")),
    },
  ];
  return {
    site: options.site,
    server: options.server,
    members,
    configFragment: [
      `# security (leafmesh trust): the mesh's operator and accounts, checked here as at the hubs`,
      ...operatorLines({ operatorJwt: files.operatorJwt, systemAccount: description.systemAccount, resolverDir: files.resolverDir, preload }),
      ...tls,
    ].join("\n"),
    leafnodesFragment: tls.join("\n"),
    routesFragment: tls.join("\n"),
    routeCredentials: existsSync(join(bundle, siteRouteSecretFile)) ? siteRouteCredentials(readCreds(join(bundle, siteRouteSecretFile)).toString()) : undefined,
    remotes,
    accounts: preload.map(({ account }) => account).filter((account) => account !== description.systemAccount),
    clientConnectOptions: { authenticator: credsFileAuthenticator(readCreds(join(bundle, "local.creds")), join(bundle, "local.creds")), tls: ownCertificateTls({ certFile: files.cert, keyFile: files.key, caFile: files.ca }, `site '${options.site}''s certificate`) },
    files,
  };
}
