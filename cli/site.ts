/** `leafmesh site`: an edge site's NATS server(s): a leaf of the hubs that its agents attach to. */
import { resolve } from "node:path";
import { LeafmeshError } from "../lib/errors.ts";
import { createLogger } from "../lib/log.ts";
import { parseHostPort } from "../nats/render.ts";
import { startAgent } from "../roles/agent.ts";
import { resolveSiteSecurity, securityOptions } from "./security-options.ts";
import { parseUpstreamOrder, serverOptions, upstreamOrderOption } from "./server-options.ts";
import { defineCommand, parsePositiveInt, splitList } from "./command.ts";
import { runUntilSignal } from "./run-until-signal.ts";

export const siteCommand = defineCommand({
  name: "site",
  summary: "run an edge site server: the site's local master, a leaf of the hubs that its agents attach to",
  description: `
A site server runs nats-server with JetStream domain = the site name, attached as a
leaf to every --upstream hub URL, mirroring the catalog from the hubs and serving it
to the site's agents, which attach to the site instead of the cloud
(leafmesh agent --hub nats://site-server:7422 --upstream-domain SITE). While the
cloud is away, the site's agents keep working together through it. One to three
servers per site; three given each other's --routes form one cluster (the catalog
mirror is then replicated on all three). All servers of one site use the same --name.

With --keys, give the site bundle of 'leafmesh keys issue-site --site SITE
--servers ... --members ...' (or the whole keys directory): the servers check
their agents' own node credentials as the hubs do, each member keeps its own
account through the site (one leaf remote each), relayed streams between two
members stay on the site, and revocations pushed at the hubs reach the site.
Agents of the site keep their own bundle and use --hub tls://SITE-SERVER:7422.`,
  options: {
    name: { type: "string", required: true, value: "SITE", description: "site name: the site's JetStream domain, the same on every server of the site" },
    server: { type: "string", value: "NAME", description: "this server's name within the site (default: the site name; required with --routes)" },
    data: { type: "string", required: true, value: "DIR", description: "directory for the nats-server config and JetStream store" },
    upstream: { type: "string", required: true, value: "URL,…", description: "leafnode URLs of every hub to attach to" },
    listen: { type: "string", default: "0.0.0.0:4222", value: "H:P", description: "NATS client address" },
    leafListen: { type: "string", default: "0.0.0.0:7422", value: "H:P", description: "leafnode address the site's agents attach to" },
    routes: { type: "string", value: "URL,…", description: "cluster routes of all servers of this site (enables clustering)" },
    clusterListen: { type: "string", default: "0.0.0.0:6222", value: "H:P", description: "cluster route address (used with --routes)" },
    replicas: { type: "string", value: "N", description: "replicas of the catalog mirror (default 1, or 3 with --routes)" },
    ...securityOptions,
    ...serverOptions({ metricsListen: "127.0.0.1:9464" }),
    ...upstreamOrderOption,
  },
  async run(options, _positionals, io) {
    if (options.routes && !options.server) throw new LeafmeshError("CONFIG_INVALID", "--server is required with --routes: every server of a site cluster needs its own name");
    const log = createLogger({ level: options.logLevel });
    const siteSecurity = resolveSiteSecurity({ keys: options.keys, insecure: options.insecure }, options.name, options.server ?? options.name, resolve(options.data), log);
    const site = await startAgent({
      siteSecurity,
      role: "site",
      node: options.server ?? options.name,
      upstreamDomain: "hub",
      upstreams: splitList(options.upstream),
      dataDir: resolve(options.data),
      client: parseHostPort(options.listen, "--listen"),
      leaf: parseHostPort(options.leafListen, "--leaf-listen"),
      monitor: parseHostPort(options.monitorListen, "--monitor-listen"),
      cluster: options.routes ? { name: options.name, listen: parseHostPort(options.clusterListen, "--cluster-listen"), routes: splitList(options.routes) } : undefined,
      replicas: options.replicas ? parsePositiveInt(options.replicas, "--replicas") : undefined,
      domain: options.name,
      upstreamOrder: parseUpstreamOrder(options.upstreamOrder),
      metrics: options.metricsListen === "off" ? undefined : parseHostPort(options.metricsListen, "--metrics-listen"),
      log,
    });
    return runUntilSignal(io, () => site.stop());
  },
});
