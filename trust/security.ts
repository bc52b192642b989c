/**
 * What hubs and agents load at start: nats-server config fragments (text to
 * splice into nats-config/render.ts's output), the files they reference, and
 * the options their own nats.js clients connect with.
 *
 * ```ts
 * const hub = loadHubSecurity(keysDir, { resolverDir: join(dataDir, "accounts") });
 * renderHubConfig({ ..., security: hub.configFragment });  // + hub.leafnodesFragment inside `leafnodes {}`
 * const publisher = await connect({ servers, ...hub.publisherConnectOptions });
 *
 * const node = loadNodeSecurity(bundleDir, "edge-a");
 * renderLeafConfig({ ..., remoteSecurity: node.leafRemoteFragment, security: node.localAuthFragment });
 * const local = await connect({ servers: localUrl, ...node.clientConnectOptions });
 * ```
 */
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { ConnectionOptions } from "@nats-io/transport-node";
import { accountRevocations, revocationsLacking } from "./hub-revocations.ts";
import { fromSeed, type Account } from "@nats-io/jwt";
import { claimsSignedHere, verifiedClaims } from "./jwt-claims.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { checkSecretFilePermissions } from "./secret-files.ts";
import { derivedLocalSeed } from "./local-nkey.ts";
import { checkBundleFiles, checkHubKeyFiles } from "./bundle-files.ts";
import { ownCertificateTls } from "./tls.ts";
import { credsFileAuthenticator, nkeySeedAuthenticator } from "./native-authenticator.ts";
import { commonName } from "./record-signature.ts";
import { allAccountJwts, nodeBundleDir, readKeyState } from "./key-store.ts";
import { localClientPermissions, nodeInboxPrefix } from "./claims.ts";
import { outdatedAccountReason } from "./outdated-accounts.ts";
import { hubRouteCredentials, type RouteCredentials } from "./route-credentials.ts";

/** The hubs' client-port CA bundle (mesh CA + enrolment CA), made by trust/enrolment.ts ensureEnrolment. */
const clientCaFile = (dir: string) => join(dir, "hub", "client-ca.crt");

const quote = (value: string) => JSON.stringify(value);

/** @default "2s" — TLS handshakes over a slow edge uplink; nats-server's 0.5 s default fails them. */
const tlsTimeoutSeconds = 2;

export function tlsBlock(options: { cert: string; key: string; ca: string; verify: boolean }): string[] {
  return [
    `tls {`,
    `  cert_file: ${quote(options.cert)}`,
    `  key_file: ${quote(options.key)}`,
    `  ca_file: ${quote(options.ca)}`,
    ...(options.verify ? [`  verify: true`] : []),
    `  timeout: ${tlsTimeoutSeconds}`,
    `}`,
  ];
}

/**
 * Operator mode with a full resolver (hubs and secured site servers): the operator, the system
 * account, and every account JWT preloaded. Full: it takes account updates pushed through the
 * system account and keeps them in `resolverDir` (docs/nats-facts.md).
 */
export function operatorLines(options: { operatorJwt: string; systemAccount: string; resolverDir: string; preload: { account: string; jwt: string }[] }): string[] {
  return [
    `operator: ${quote(options.operatorJwt)}`,
    `system_account: ${quote(options.systemAccount)}`,
    `resolver {`,
    `  type: full`,
    `  dir: ${quote(options.resolverDir)}`,
    `  allow_delete: false`,
    `  interval: "2m"`,
    `}`,
    `resolver_preload {`,
    ...options.preload.map(({ account, jwt }) => `  ${account}: ${quote(jwt)}`),
    `}`,
  ];
}

export interface HubSecurity {
  /** Top level of the hub's config: operator, system account, full resolver with preloads, TLS for the client port. */
  configFragment: string;
  /** Inside the hub's `leafnodes {}` block: TLS with client certificates required. */
  leafnodesFragment: string;
  /**
   * Inside `cluster {}` (and `gateway {}`): TLS with certificates of the mesh CA both ways. Without it
   * any process that reaches a route port joins the cluster and sees every account.
   */
  routesFragment: string;
  /** What routes and gateways present and ask (nats/render.ts ClusterOptions.credentials): trust/route-credentials.ts. */
  routeCredentials: RouteCredentials;
  /** Files the fragments reference (all absolute), for checks and docs. */
  files: { operatorJwt: string; cert: string; key: string; ca: string; resolverDir: string };
  /** Every account of the mesh but the system account: the hub resolves them all at start (nats-config/account-preload.ts). */
  accounts: string[];
  /** Accounts an older leafmesh signed, with why they must be signed again (`leafmesh keys resign`). */
  outdatedAccounts: string[];
  /**
   * Accounts whose keys-directory JWT is newer than the one this hub stored but drops revocations it holds
   * (a keys directory restored from a backup): the stored one is preloaded instead. One line per account.
   */
  revocationsKept: string[];
  /** The hub's own clients (catalog publisher): mesh account, TLS with the hub's certificate. */
  publisherConnectOptions: Partial<ConnectionOptions>;
  /** A system-account client: pushes account updates (revocations). */
  systemConnectOptions: Partial<ConnectionOptions>;
}

function readCreds(path: string): Uint8Array {
  checkSecretFilePermissions(path);
  return readFileSync(path);
}

export function loadHubSecurity(dir: string, options: { resolverDir: string }): HubSecurity {
  const root = resolve(dir);
  const state = readKeyState(root);
  const files = {
    operatorJwt: join(root, "operator.jwt"),
    cert: join(root, "hub", "hub.crt"),
    key: join(root, "hub", "hub.key"),
    ca: join(root, "hub", "ca.crt"),
    resolverDir: resolve(options.resolverDir),
  };
  checkSecretFilePermissions(files.key);
  checkHubKeyFiles(root);
  const preload = newestAccountJwts(allAccountJwts(root), files.resolverDir);
  const configFragment = [
    `# security (leafmesh trust): decentralised JWT auth, one account per node, TLS with client certificates`,
    ...operatorLines({ operatorJwt: files.operatorJwt, systemAccount: state.systemAccount, resolverDir: files.resolverDir, preload }),
    // The client port also accepts the enrolment CA's certificate (a join token's, trust/enrolment.ts) when enrolment
    // was set up: joining nodes have no node certificate yet. Leaf and route ports keep the mesh CA only.
    ...tlsBlock({ ...files, ca: existsSync(clientCaFile(root)) ? clientCaFile(root) : files.ca, verify: true }),
  ].join("\n");
  // The hub's own clients (and the operator's tools) know the hub by its certificate, not by a host name (ownCertificateTls).
  const tls = ownCertificateTls({ keyFile: files.key, certFile: files.cert, caFile: files.ca }, "this mesh's hub certificate");
  return {
    configFragment,
    leafnodesFragment: tlsBlock({ ...files, verify: true }).join("\n"),
    routesFragment: tlsBlock({ ...files, verify: true }).join("\n"),
    routeCredentials: hubRouteCredentials(readCreds(join(root, "hub", "sys.creds")).toString()),
    files,
    accounts: preload.map(({ account }) => account).filter((account) => account !== state.systemAccount),
    outdatedAccounts: preload.flatMap(({ jwt }) => outdatedAccountReason(verifiedClaims<Account>(jwt)) ?? []),
    revocationsKept: preload.flatMap(({ account, keptRevocations }) => {
      if (!keptRevocations) return [];
      const node = Object.values(state.nodes).find((candidate) => candidate.account === account)?.node;
      return [`${node ? `node '${node}' (account ${account})` : `account ${account}`}: users ${Object.keys(keptRevocations).join(", ")}`];
    }),
    publisherConnectOptions: { authenticator: credsFileAuthenticator(readCreds(join(root, "hub", "publisher.creds")), join(root, "hub", "publisher.creds")), tls },
    systemConnectOptions: { authenticator: credsFileAuthenticator(readCreds(join(root, "hub", "sys.creds")), join(root, "hub", "sys.creds")), tls },
  };
}

/**
 * For each account, the newer of the keys directory's JWT and the one the hub's
 * full resolver stored (pushed updates, e.g. a revocation). nats-server 2.9.10
 * lets `resolver_preload` overwrite the stored JWT even when it is older
 * (measured: a hub restarted from a keys copy made before a revocation let the
 * revoked node back in), so a stale copy must never be preloaded.
 */
export function newestAccountJwts(fromKeys: { account: string; jwt: string }[], resolverDir: string): { account: string; jwt: string; keptRevocations?: Record<string, number> }[] {
  return fromKeys.map((entry) => {
    const storedFile = join(resolverDir, `${entry.account}.jwt`);
    if (!existsSync(storedFile)) return entry;
    const stored = readFileSync(storedFile, "utf8").trim();
    try {
      // Equal times: the stored one was pushed on purpose; keep it.
      // The stored file is the server's (checked); the keys directory's own JWT is read as it is.
      const held = verifiedClaims<Account>(stored);
      const offered = claimsSignedHere<Account>(entry.jwt);
      if (held.iat >= offered.iat) return { account: entry.account, jwt: stored };
      // A newer JWT that drops a revocation the hub holds was signed in a keys directory older than the
      // revocation (restored from a backup): preloading it would let the revoked key in again.
      const kept = revocationsLacking(accountRevocations(held), accountRevocations(offered));
      return Object.keys(kept).length > 0 ? { account: entry.account, jwt: stored, keptRevocations: kept } : entry;
    } catch {
      return entry; // an unreadable stored file: the keys directory's JWT replaces it
    }
  });
}

export interface NodeSecurity {
  node: string;
  /** Inside the leaf remote (render's `remoteSecurity`): the node's creds and TLS. Use tls:// or nats-leaf:// URLs. */
  leafRemoteFragment: string;
  /** Top level of the agent's own nats-server: only holders of the local nkey may connect (docs/nats-facts.md: leaf-local clients are not covered by leaf permissions). */
  localAuthFragment: string;
  /** For the agent's clients of its own nats-server: the local nkey and the node's inbox prefix. */
  clientConnectOptions: Partial<ConnectionOptions>;
  /** The libp2p pre-shared key (swarm.key format) for @libp2p/pnet. */
  psk: Uint8Array;
  files: { creds: string; cert: string; key: string; ca: string; psk: string; localNkey: string };
}

/**
 * Loads a node's bundle: `dir` is either the whole keys directory (then
 * `nodes/<node>` in it is used) or the bundle copied to the node. Refuses
 * secrets with loose permissions.
 */
/** The node's certificate and key and the mesh CA, as PEM: its tunnel identity (services/tunnel/node-identity.ts). */
export function nodeIdentityPems(security: NodeSecurity): { certPem: string; keyPem: string; caPem: string } {
  const read = (path: string) => readFileSync(path, "utf8");
  return { certPem: read(security.files.cert), keyPem: read(security.files.key), caPem: read(security.files.ca) };
}

/**
 * A bundle is one node's: its certificate names that node. Another node's bundle under this node's name
 * ran, attached with the other node's credentials, and failed later with nothing said but timeouts
 * (its node record, its catalog mirror: the hub holds it to the other node's subjects).
 */
function checkBundleNode(certFile: string, bundle: string, node: string): void {
  if (!existsSync(certFile)) return;
  let owner: string | undefined;
  try {
    owner = commonName(new X509Certificate(readFileSync(certFile)));
  } catch (cause) {
    throw new LeafmeshError("TRUST_FAILED", `${certFile} is not a certificate that can be read: copy the bundle of node '${node}' again (leafmesh keys issue --node ${node})`, { cause });
  }
  if (owner !== undefined && owner !== node) {
    throw new LeafmeshError(
      "TRUST_FAILED",
      `the bundle in ${bundle} is node '${owner}''s (its certificate names '${owner}'), not node '${node}''s: give --node ${owner}, or the bundle issued for '${node}' (leafmesh keys issue --node ${node})`,
    );
  }
}

export function loadNodeSecurity(dir: string, node: string): NodeSecurity {
  const nested = nodeBundleDir(resolve(dir), node);
  const bundle = existsSync(nested) ? nested : resolve(dir);
  const files = {
    creds: join(bundle, "node.creds"),
    cert: join(bundle, "node.crt"),
    key: join(bundle, "node.key"),
    ca: join(bundle, "ca.crt"),
    psk: join(bundle, "swarm.key"),
    localNkey: join(bundle, "local.nk"),
  };
  if (!existsSync(files.creds)) {
    throw new LeafmeshError("TRUST_FAILED", `no credentials for node '${node}' in ${bundle} (node.creds is missing: issue them with \`leafmesh keys issue --node ${node}\`, or they were revoked)`);
  }
  checkBundleNode(files.cert, bundle, node);
  for (const secret of [files.creds, files.key, files.psk]) checkSecretFilePermissions(secret);
  checkBundleFiles(files, node);
  // The local nkey: a local.nk an earlier leafmesh made in the bundle, else derived from node.key (trust/local-nkey.ts),
  // so that nothing is written into the bundle: it may be read-only (a Secret volume), and it failed there.
  let localSeed: string;
  if (existsSync(files.localNkey)) {
    checkSecretFilePermissions(files.localNkey);
    localSeed = readFileSync(files.localNkey, "utf8").trim();
  } else {
    localSeed = derivedLocalSeed(readFileSync(files.key), node);
  }
  const localPublic = fromSeed(new TextEncoder().encode(localSeed)).getPublicKey();
  return {
    node,
    leafRemoteFragment: [`credentials: ${quote(files.creds)}`, ...tlsBlock({ ...files, verify: false })].join("\n"),
    localAuthFragment: [`authorization {`, `  users: [ { nkey: ${quote(localPublic)}, permissions: ${JSON.stringify(localClientPermissions(node))} } ]`, `}`].join("\n"),
    clientConnectOptions: { authenticator: nkeySeedAuthenticator(localSeed), inboxPrefix: nodeInboxPrefix(node) },
    psk: new Uint8Array(readFileSync(files.psk)),
    files,
  };
}
