/**
 * The security flags every server command shares: `--keys DIR` (the mesh's keys
 * from `leafmesh keys init`, or a node's bundle from `keys issue`) or an explicit
 * `--insecure`. There is no insecure default: with neither, the command refuses
 * to start and says what to do.
 */
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { commonName } from "../trust/record-signature.ts";
import { LeafmeshError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { loadHubSecurity, loadNodeSecurity, type HubSecurity, type NodeSecurity } from "../trust/security.ts";
import { loadSiteSecurity, type SiteSecurity } from "../trust/site-security.ts";
import { isFlatKeys } from "../trust/flat-keys.ts";
import type { OptionSpec } from "./command.ts";
import { option } from "./options.ts";

export const securityOptions = {
  keys: option.text({ value: "DIR", description: "the mesh's keys (leafmesh keys init; on a node, its bundle from leafmesh keys issue): authentication, TLS and the pre-shared key" }),
  insecure: option.flag({ description: "run without authentication or TLS, for a local experiment only (prints a warning)" }),
};

function choose(options: { keys?: string; insecure: boolean }, command: string, log: Logger): string | undefined {
  if (options.keys && options.insecure) throw new LeafmeshError("CONFIG_INVALID", "give either --keys or --insecure, not both");
  if (!options.keys && !options.insecure) {
    throw new LeafmeshError(
      "CONFIG_INVALID",
      `no security configured: pass --keys DIR (create one with 'leafmesh keys init --dir DIR', then 'leafmesh keys issue --dir DIR --node NAME' per node), or --insecure for a local experiment`,
    );
  }
  if (options.insecure) {
    log.warn(`INSECURE: leafmesh ${command} runs without authentication or TLS (--insecure); anyone who can reach its ports can join the mesh, read the catalog and relay. Use --keys outside local experiments.`);
    return undefined;
  }
  return existingKeys(options.keys!, command);
}

/** What --keys names, by command: said when the path holds nothing. */
const keysWanted: Record<string, string> = {
  hub: "give the mesh's keys directory (made once by 'leafmesh keys init')",
  site: "give the site's bundle (made by 'leafmesh keys issue-site' and copied here)",
  agent: "give the node's bundle (made by 'leafmesh keys issue --node NAME' and copied here) or the mesh's keys directory",
};

/**
 * --keys as given, once it names a directory. A path mistyped was said as keys missing from it, "run `leafmesh keys init
 * --dir PATH` first" for a hub: that makes a new mesh, another CA, at the mistyped path.
 */
function existingKeys(keys: string, command: string): string {
  let directory: boolean | undefined;
  try {
    directory = statSync(keys).isDirectory();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw new LeafmeshError("CONFIG_INVALID", `--keys ${keys}: cannot be read`, { cause: error });
  }
  const wanted = keysWanted[command] ?? "give the mesh's keys directory or a node's bundle";
  if (directory === undefined) throw new LeafmeshError("CONFIG_INVALID", `--keys ${keys}: no such directory (a path mistyped?): ${wanted}`);
  if (!directory) throw new LeafmeshError("CONFIG_INVALID", `--keys ${keys}: a file, not a directory: ${wanted}`);
  return keys;
}

export function resolveHubSecurity(options: { keys?: string; insecure: boolean }, dataDir: string, log: Logger): HubSecurity | undefined {
  const dir = choose(options, "hub", log);
  return dir ? loadHubSecurity(dir, { resolverDir: join(dataDir, "accounts") }) : undefined;
}

export function resolveNodeSecurity(options: { keys?: string; insecure: boolean }, node: string, command: string, log: Logger): NodeSecurity | undefined {
  const dir = choose(options, command, log);
  return dir ? loadNodeSecurity(dir, node) : undefined;
}

/** A site server's security from its site bundle (`leafmesh keys issue-site`), or undefined with --insecure. */
export function resolveSiteSecurity(options: { keys?: string; insecure: boolean }, site: string, server: string, dataDir: string, log: Logger): SiteSecurity | undefined {
  const dir = choose(options, "site", log);
  return dir ? loadSiteSecurity(dir, { site, server, resolverDir: join(dataDir, "accounts") }) : undefined;
}

/** Client flags of status, sub, netcheck and drill: how to authenticate to a secured hub or agent (cli/client-connect.ts connects with them). */
export const clientSecurityOptions = {
  keys: { type: "string", value: "DIR", description: "the mesh's keys directory (or a node's bundle) when the server is secured" },
  node: { type: "string", value: "NAME", description: "with --keys: connect to this node's agent (its local credentials); without: to a hub (the hub's credentials and TLS)" },
  site: { type: "string", value: "SITE", description: "with --keys: connect to a server of this site (on the server itself: the site's loopback credentials; --node names the server)" },
} satisfies Record<string, OptionSpec>;

/**
 * The node a bundle (`keys issue`, or an agent's DATA/keys) was issued for, from its certificate; undefined for
 * anything else (the keys directory, a hub's copy, a site bundle).
 */
export function bundleNode(dir: string): string | undefined {
  if (existsSync(join(dir, "state.json")) || !existsSync(join(dir, "node.creds")) || !existsSync(join(dir, "node.crt"))) return undefined;
  try {
    return commonName(new X509Certificate(readFileSync(join(dir, "node.crt"))));
  } catch {
    return undefined; // loadNodeSecurity says what is wrong with the certificate
  }
}

/**
 * Connection options for a client of a secured hub or agent; {} without --keys. A node's bundle without --node
 * is that node's (README: "watch the mesh from any hub or node"): before, it was read as a keys directory, and
 * the user was told to run `keys init` into the bundle.
 */
export function clientConnectOptions(options: { keys?: string; node?: string; site?: string }): Partial<import("@nats-io/transport-node").ConnectionOptions> {
  if (!options.keys) return {};
  if (isFlatKeys(options.keys)) {
    throw new LeafmeshError("CONFIG_INVALID", `${options.keys} is a keys Secret's mount: give the keys directory the hub unpacked it into (DATA/keys), e.g. --keys /data/keys`);
  }
  if (options.site) return loadSiteSecurity(options.keys, { site: options.site, server: options.node ?? options.site, resolverDir: join(options.keys, "unused") }).clientConnectOptions;
  const node = options.node ?? bundleNode(options.keys);
  if (node) return loadNodeSecurity(options.keys, node).clientConnectOptions;
  return loadHubSecurity(options.keys, { resolverDir: join(options.keys, "hub") }).publisherConnectOptions;
}
