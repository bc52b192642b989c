/**
 * Flags every server command (hub, site, agent) shares, declared once. The
 * metrics port differs per role so that a hub and an agent on one machine do
 * not collide by default.
 */
import { accessSync, constants } from "node:fs";
import { resolve } from "node:path";
import { LeafmeshError } from "../lib/errors.ts";
import { parseHostPort, type HostPort } from "../nats/render.ts";
import { makeDirectories } from "../lib/make-dirs.ts";
import { lockDataDirectory } from "./data-lock.ts";
import { checkDataOwnership } from "./data-ownership.ts";
import { option } from "./options.ts";
import { parseHubProxy } from "../nats/hub-proxy.ts";

/**
 * --data, made (with its parents), checked writable and locked for this process before anything starts: a directory
 * that cannot be had is a configuration error that names it and says why, not a stack trace from the first file
 * written in it.
 */
export function dataDirectory(text: string, role: string): string {
  const path = usableDirectory("--data", text);
  checkDataOwnership("--data", path);
  // One process per data directory (data-lock.ts says what two did to each other).
  lockDataDirectory(path, role);
  return path;
}

/**
 * The directory a flag names, made (with its parents, in `mode`) and checked writable: its absolute path, or
 * CONFIG_INVALID that names the flag and says why (the cause keeps the system's words).
 */
export function usableDirectory(flag: string, text: string, mode?: number): string {
  const path = resolve(text);
  try {
    makeDirectories(path, mode);
    accessSync(path, constants.W_OK | constants.X_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "";
    const why: Record<string, string> = { ENOENT: "it cannot be made there", EACCES: "permission denied", EPERM: "permission denied", ENOTDIR: "a file is in the way", EEXIST: "it is a file", EROFS: "the file system is read-only" };
    throw new LeafmeshError("CONFIG_INVALID", `${flag}: cannot use ${path}: ${why[code] ?? (error as Error).message}`, { cause: error });
  }
  return path;
}

export const logLevels = ["trace", "debug", "info", "warn", "error"] as const;

/**
 * --replicas against --routes: one server keeps one copy (nats-server refuses more, and the catalog would
 * never open: the role retried for minutes, saying only "replicas > 1 not supported in non-clustered mode"),
 * and JetStream keeps at most 5.
 */
export function checkReplicas(replicas: number | undefined, routes: string[] | undefined): void {
  if (replicas === undefined) return;
  if (!routes?.length && replicas > 1) throw new LeafmeshError("CONFIG_INVALID", `--replicas ${replicas} needs a cluster: one server keeps one copy (give --routes of the cluster's servers, or leave --replicas out)`);
  if (replicas > 5) throw new LeafmeshError("CONFIG_INVALID", `--replicas ${replicas}: JetStream keeps at most 5 copies`);
}

export function serverOptions(defaults: { metricsListen: string }) {
  return {
    monitorListen: option.hostPort({ default: "127.0.0.1:8222", description: "the nats-server's HTTP monitoring address (health, links)" }),
    metricsListen: option.hostPort({ default: defaults.metricsListen, off: true, description: "address of /metrics (Prometheus), /healthz and /readyz; 'off' to disable" }),
    logLevel: option.choice(logLevels, { default: "info", value: "LEVEL", description: "log level: trace, debug, info, warn, error" }),
  };
}

/** Flags of the commands that attach to upstreams (site, agent). */
export const upstreamOrderOption = {
  upstreamOrder: option.choice(["rtt", "given"] as const, { default: "rtt", description: "which upstream to attach to first: the nearest by measured round-trip time, or the first given" }),
};

/** --hub-proxy (site, agent): docs/restricted-egress.md. */
export const hubProxyOption = {
  hubProxy: option.parsed(
    {
      value: "URL",
      description:
        "the site's HTTP proxy (http://[USER:PASSWORD@]HOST:PORT), for a node whose network lets nothing out but through it: the leaf reaches every upstream by HTTP CONNECT through it, its TLS end to end and the hub's certificate verified by the hub's name (upstreams must be given by host name). HTTPS_PROXY is not followed by itself: give it here (docs/restricted-egress.md)",
    },
    (text) => parseHubProxy(text),
  ),
};

/**
 * --leaf-advertise (hub, site): the address leafs are to dial, as nats-server's `advertise` takes it (HOST:PORT, IPv6
 * in brackets). A wildcard or port 0 names nothing a leaf can dial; a URL is not what nats-server takes there.
 */
export function parseLeafAdvertise(text: string): HostPort {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text.trim())) throw new LeafmeshError("CONFIG_INVALID", `'${text}' is a URL: give HOST:PORT, the address leafs dial (for example hub-1.example.net:7422)`);
  const address = parseHostPort(text);
  if (address.port === 0) throw new LeafmeshError("CONFIG_INVALID", `'${text}': port 0 is no port a leaf can dial: give the port leafs reach this server's leafnode port at`);
  if (["0.0.0.0", "::", ""].includes(address.host)) throw new LeafmeshError("CONFIG_INVALID", `'${text}': ${address.host || "an empty host"} is a wildcard, no address a leaf can dial: give the name or address leafs reach this server at`);
  return address;
}
