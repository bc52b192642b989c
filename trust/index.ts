/**
 * trust/: the mesh's keys and who may do what on the bus. Every node has its
 * own identity — a NATS account and leaf-only user (JWT, decentralised auth,
 * full resolver), a TLS certificate of the mesh CA — plus the mesh's libp2p
 * pre-shared key. A stolen node reaches only its own subjects; a stranger does
 * not get in; a revoked node is cut off within seconds without a hub restart.
 *
 * ```ts
 * import { runKeysCommand, loadHubSecurity, loadNodeSecurity, startTrustAuditor } from "../trust/index.ts";
 *
 * // leafmesh keys ...
 * process.exitCode = await runKeysCommand(argv, { stdout: process.stdout, stderr: process.stderr });
 *
 * // leafmesh hub --keys DIR
 * const hub = loadHubSecurity(keysDir, { resolverDir: join(dataDir, "accounts") });
 * renderHubConfig({ ..., security: hub.configFragment });   // and hub.leafnodesFragment inside `leafnodes {}`
 * const publisher = await connect({ servers, ...hub.publisherConnectOptions });
 * const auditor = await startTrustAuditor({ dir: keysDir, servers, tls: hub.publisherConnectOptions.tls, systemConnectOptions: hub.systemConnectOptions, log });
 *
 * // leafmesh agent --keys DIR (the node's bundle, or the whole keys dir)
 * const node = loadNodeSecurity(keysDir, "edge-a");
 * renderLeafConfig({ ..., upstreams: ["tls://hub:7422"], remoteSecurity: node.leafRemoteFragment, security: node.localAuthFragment });
 * const local = await connect({ servers: localUrl, ...node.clientConnectOptions });
 * startTunnelHost({ ..., psk: node.psk });
 *
 * // leafmesh site --keys DIR (the site bundle of `keys issue-site`, or the whole keys dir)
 * const site = loadSiteSecurity(keysDir, { site: "shop", server: "shop-1", resolverDir: join(dataDir, "accounts") });
 * renderLeafConfig({ ..., security: site.configFragment, leafSecurity: site.leafnodesFragment, remotes: site.remotes });
 * ```
 */
export { runKeysCommand } from "./cli.ts";
export { loadHubSecurity, loadNodeSecurity, type HubSecurity, type NodeSecurity } from "./security.ts";
export { checkSecretFilePermissions, writeSecretFile } from "./secret-files.ts";
export { initKeys, issueNode, issueSite, revokeNode, listNodes, explainUserKey, nodeBundleDir, siteBundleDir, type NodeListing } from "./key-store.ts";
export { loadSiteSecurity, type SiteSecurity } from "./site-security.ts";
export { pushAccountClaims } from "./push.ts";
export { startTrustAuditor, type TrustAuditor } from "./auditor.ts";
export { explainDenial, watchPermissionErrors, classifyServerLogLine, explainLeafRefusal, diagnoseCredentialsFile, type Refusal, type RefusalCause } from "./denials.ts";
export { signNodeRecord, verifyNodeRecord, type SignedNodeRecord } from "./record-signature.ts";
export { nodeInboxPrefix, nodeAccountName, meshAccountName } from "./claims.ts";

/** What `--insecure` prints: there is no insecure default, only this explicit, loud one. */
export const insecureWarning =
  "WARNING: --insecure: no authentication, no TLS. Any process that can reach this server can read every node's traffic, impersonate any node and rewrite the catalog. For local experiments only; run `leafmesh keys init` for a real mesh.";
