/** `leafmesh agent`: the per-node agent (leaf nats-server + actors). */
import { resolve } from "node:path";
import { createLogger } from "../lib/log.ts";
import { parseHostPort } from "../nats/render.ts";
import { startAgent } from "../roles/agent.ts";
import { resolveNodeSecurity, securityOptions } from "./security-options.ts";
import { parseUpstreamOrder, serverOptions, upstreamOrderOption } from "./server-options.ts";
import { defineCommand, splitList } from "./command.ts";
import { runUntilSignal } from "./run-until-signal.ts";
import { readFileSync } from "node:fs";
import { LeafmeshError } from "../lib/errors.ts";
import type { ObserverAddress } from "../services/tunnel/index.ts";
import { nodeIdentityPems } from "../trust/security.ts";
import { agentActors } from "../roles/agent-actors.ts";
import { interceptModes, type InterceptMode } from "../services/proxier/index.ts";

/** "198.18.64.1:3478,3479" → the observer's host and two ports. */
export function parseObserver(text: string): ObserverAddress {
  const match = /^(.+):(\d+),(\d+)$/.exec(text.trim());
  if (!match) throw new LeafmeshError("CONFIG_INVALID", `--observer: '${text}' is not HOST:PORT1,PORT2 (for example 198.18.64.1:3478,3479)`);
  return { host: match[1].replace(/^\[|\]$/g, ""), ports: [Number(match[2]), Number(match[3])] };
}

function parseWays(text: string): { direct: boolean; punch: boolean; relay: boolean } {
  const ways = splitList(text);
  const unknown = ways.filter((way) => !["direct", "punch", "relay"].includes(way));
  if (unknown.length > 0 || ways.length === 0) throw new LeafmeshError("CONFIG_INVALID", `--tunnel-ways: '${text}' must list direct, punch and/or relay`);
  return { direct: ways.includes("direct"), punch: ways.includes("punch"), relay: ways.includes("relay") };
}

function parseOnOff(text: string, flag: string): boolean {
  if (text !== "on" && text !== "off") throw new LeafmeshError("CONFIG_INVALID", `${flag}: '${text}' is not on or off`);
  return text === "on";
}

function readSecretFile(path: string, flag: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (cause) {
    throw new LeafmeshError("CONFIG_INVALID", `${flag}: cannot read ${path}`, { cause });
  }
}

export const agentCommand = defineCommand({
  name: "agent",
  summary: "run the agent of one node: its leaf NATS server and its actors",
  description: `
The agent runs a leaf nats-server (JetStream domain = node name) connected to
every --hub URL (it fails over between them by itself), mirrors the service
catalog into the node's own domain, and keeps serving it while the hubs are
unreachable. --hub URLs are the hubs' leafnode addresses (leafmesh hub
--leaf-listen), e.g. nats://hub-1:7422.`,
  options: {
    node: { type: "string", required: true, value: "NAME", description: "node name: unique, lowercase letters, digits and '-' (the node's JetStream domain)" },
    hub: { type: "string", required: true, value: "URL,…", description: "leafnode URLs of every hub (or site server) to attach to" },
    data: { type: "string", required: true, value: "DIR", description: "directory for the leaf server's config and JetStream store (the catalog mirror)" },
    natsListen: { type: "string", default: "127.0.0.1:4222", value: "H:P", description: "client address of the node's own nats-server (leafmesh status/sub connect here)" },
    dns: { type: "string", default: "off", value: "H:P", description: "cluster DNS address, e.g. 169.254.96.16:53 on a node (kubelet's clusterDNS) or 127.0.0.1:5353; off: no DNS" },
    clusterDomain: { type: "string", default: "cluster.local", value: "DOMAIN", description: "the cluster domain the DNS answers for" },
    upstream: { type: "string", value: "ADDR,…", description: "DNS servers for names outside the cluster domain (default: the nameservers of /etc/resolv.conf)" },
    socks: { type: "string", default: "off", value: "H:P", description: "SOCKS5 proxy for operators: any node by name (ssh through NATs), any Service by name; e.g. 127.0.0.1:1080; off: none" },
    intercept: { type: "string", default: "off", value: "MODE", description: "cluster-IP interception: iptables, nftables (on a real node; needs root or NET_ADMIN) or off (reach services on the proxy listeners directly)" },
    proxyHost: { type: "string", default: "127.0.0.1", value: "HOST", description: "address the per-service-port proxy listeners bind (the interception rules point there)" },
    psk: { type: "string", value: "FILE", description: "the mesh's pre-shared key (swarm.key format); enables the node-to-node tunnel (default: the one in --keys)" },
    tunnelListen: { type: "string", default: "/ip4/0.0.0.0/tcp/4101", value: "MULTIADDR,…", description: "where the tunnel (libp2p) listens for other nodes" },
    site: { type: "string", value: "NAME", description: "the edge site this node belongs to (published in its node record)" },
    region: { type: "string", value: "NAME", description: "the cloud region this node uses (published in its node record)" },
    observer: { type: "string", value: "HOST:P1,P2", description: "the hub's NAT observer (leafmesh hub --observer): lets the node learn its NAT type" },
    tunnelTls: {
      type: "string",
      default: "0.0.0.0:4102",
      value: "H:P|off",
      description: "with --keys: direct (LAN) streams each get a TLS connection of their own, served here, and relayed streams a TLS session on a relay channel of their own (OpenSSL: faster than libp2p's noise and yamux); off: every stream on libp2p",
    },
    tunnelWays: { type: "string", default: "direct,punch,relay", value: "WAYS", description: "the paths the tunnel may use, any of direct, punch, relay (e.g. 'relay' on links whose NAT must not be punched)" },
    mdns: { type: "string", default: "on", value: "on|off", description: "find nodes on the same LAN by mDNS (with --psk)" },
    upstreamDomain: { type: "string", default: "hub", value: "NAME", description: "JetStream domain to mirror the catalog from: hub, or the site's name under a site" },
    ...securityOptions,
    ...serverOptions({ metricsListen: "127.0.0.1:9465" }),
    ...upstreamOrderOption,
  },
  async run(options, _positionals, io) {
    const upstreams = splitList(options.hub);
    if (upstreams.length === 0) throw new LeafmeshError("CONFIG_INVALID", "--hub needs at least one URL");
    if (!(interceptModes as readonly string[]).includes(options.intercept)) {
      throw new LeafmeshError("CONFIG_INVALID", `--intercept: '${options.intercept}' is not one of ${interceptModes.join(", ")}`);
    }
    const log = createLogger({ level: options.logLevel });
    const security = resolveNodeSecurity({ keys: options.keys, insecure: options.insecure }, options.node, "agent", log);
    const psk = options.psk ? readSecretFile(options.psk, "--psk") : security ? new TextDecoder().decode(security.psk) : undefined;
    // Checked also without --keys (where it has no effect): a typo should not wait for the day keys are added.
    const tunnelTls = options.tunnelTls === "off" ? undefined : parseHostPort(options.tunnelTls, "--tunnel-tls");
    const agent = await startAgent({
      security,
      actors: agentActors({
        proxyHost: options.proxyHost,
        intercept: options.intercept as InterceptMode,
        dns: options.dns === "off" ? undefined : parseHostPort(options.dns, "--dns"),
        clusterDomain: options.clusterDomain,
        socks: options.socks === "off" ? undefined : parseHostPort(options.socks, "--socks"),
        upstreams: options.upstream ? splitList(options.upstream) : undefined,
        tunnel: psk
          ? {
              psk,
              listen: splitList(options.tunnelListen),
              site: options.site,
              region: options.region,
              observer: options.observer ? parseObserver(options.observer) : undefined,
              mdns: parseOnOff(options.mdns, "--mdns"),
              ways: parseWays(options.tunnelWays),
              identity: security ? nodeIdentityPems(security) : undefined,
              tlsStreams: security ? tunnelTls : undefined,
            }
          : undefined,
      }),
      node: options.node,
      upstreams,
      dataDir: resolve(options.data),
      client: parseHostPort(options.natsListen, "--nats-listen"),
      monitor: parseHostPort(options.monitorListen, "--monitor-listen"),
      upstreamDomain: options.upstreamDomain,
      upstreamOrder: parseUpstreamOrder(options.upstreamOrder),
      metrics: options.metricsListen === "off" ? undefined : parseHostPort(options.metricsListen, "--metrics-listen"),
      log,
    });
    return runUntilSignal(io, () => agent.stop());
  },
});
