/** `leafmesh site`: an edge site's NATS server(s): a leaf of the hubs that its agents attach to. */
import { commandSummaries } from "./command-list.ts";
import { checkLoopbackReachable } from "../bus/connect.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { createLogger } from "../lib/log.ts";
import { startAgent } from "../roles/agent.ts";
import { resolveSiteSecurity, securityOptions } from "./security-options.ts";
import { checkReplicas, dataDirectory, parseLeafAdvertise, serverOptions, upstreamOrderOption, hubProxyOption } from "./server-options.ts";
import { defineCommand } from "./command.ts";
import { option } from "./options.ts";
import { checkNodeName, leaseKeys } from "../bus/subjects.ts";
import { restartTurn } from "../roles/restart-turn.ts";
import { defaultLeaseTtlMs } from "../services/controller/lease.ts";
import { runUntilSignal } from "./run-until-signal.ts";
import { watchSiteBundle } from "../trust/bundle-watch.ts";
import { certificateHosts } from "../trust/hub-certificate.ts";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";

/** --leaf-advertise on a secured site: agents check the site's certificate by the name they dial, so it must hold it. */
function checkSiteCertificateNames(certFile: string, site: string, host: string): void {
  const cert = new X509Certificate(readFileSync(certFile));
  if ((isIP(host) ? cert.checkIP(host) : cert.checkHost(host, { subject: "never" })) !== undefined) return;
  const names = certificateHosts(cert.toString());
  throw new LeafmeshError(
    "CONFIG_INVALID",
    `--leaf-advertise ${host}: the site's certificate (${certFile}) does not name ${host} (it names ${names.join(", ")}), and its agents dial the advertised address first and check the certificate by the name dialled: ` +
      `issue the site again with it (\`leafmesh keys issue-site --site ${site} --hosts ${[...new Set([...names, host])].join(",")}\` and its members and servers, in the mesh's keys directory) and give every server of the site the new bundle`,
  );
}

export const siteCommand = defineCommand({
  name: "site",
  summary: commandSummaries.site,
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
Agents of the site keep their own bundle and use --hub tls://SITE-SERVER:7422.
The site bundle issued again and copied over the old one (a member added), a
running server checks it and starts again in place with it; the servers of a
site cluster take turns, one at a time, so the site keeps serving its agents.`,
  configFile: true,
  options: {
    name: option.parsed({ required: true, value: "SITE", description: "site name: the site's JetStream domain, the same on every server of the site" }, (text) => checkNodeName(text, "site name")),
    server: option.parsed({ value: "NAME", description: "this server's name within the site (default: the site name; required with --routes)" }, (text) => checkNodeName(text, "site server name")),
    data: option.text({ required: true, value: "DIR", description: "directory for the nats-server config and JetStream store; one leafmesh process per directory (a second is refused)" }),
    upstream: option.list({ required: true, value: "URL,…", description: "leafnode URLs of every hub to attach to" }),
    listen: option.hostPort({ default: "0.0.0.0:4222", description: "NATS client address" }),
    leafListen: option.hostPort({ default: "0.0.0.0:7422", description: "leafnode address the site's agents attach to" }),
    leafAdvertise: option.parsed(
      {
        value: "H:P",
        description:
          "the leafnode address this server names to its agents instead of its own --leaf-listen address: nats-server sends its own in every leaf's INFO (for 0.0.0.0, its first non-local address, which on a box with an uplink and a LAN can be the uplink's), and an agent dials it before the URLs it was given. Give the address the site's agents must use; with --keys, a name the site's certificate holds (keys issue-site --hosts) (default: the --leaf-listen address)",
      },
      parseLeafAdvertise,
    ),
    routes: option.list({ value: "URL,…", description: "cluster routes of all servers of this site (enables clustering)" }),
    clusterListen: option.hostPort({ default: "0.0.0.0:6222", description: "cluster route address (used with --routes)" }),
    replicas: option.integer({ value: "N", description: "replicas of the catalog mirror (default 1, or 3 with --routes)" }),
    ...securityOptions,
    ...serverOptions({ metricsListen: "127.0.0.1:9464" }),
    ...hubProxyOption,
    ...upstreamOrderOption,
  },
  async run(options, _positionals, io) {
    if (options.routes && !options.server) throw new LeafmeshError("CONFIG_INVALID", "--server is required with --routes: every server of a site cluster needs its own name");
    checkReplicas(options.replicas, options.routes);
    const dataDir = dataDirectory(options.data, "site");
    const log = createLogger({ level: options.logLevel });
    const siteSecurity = resolveSiteSecurity({ keys: options.keys, insecure: options.insecure }, options.name, options.server ?? options.name, dataDir, log);
    // Its own process uses the site bundle's loopback-only user (local.creds); agents use the leaf port, not this one.
    if (siteSecurity) checkLoopbackReachable(options.listen, "--listen", "with --keys, the site's own process (the site bundle's loopback-only user)");
    // Agents dial the advertised address first and check the site's certificate by that name.
    if (siteSecurity && options.leafAdvertise) checkSiteCertificateNames(siteSecurity.files.cert, options.name, options.leafAdvertise.host);
    const site = await startAgent({
      siteSecurity,
      role: "site",
      node: options.server ?? options.name,
      upstreamDomain: "hub",
      upstreams: options.upstream,
      dataDir,
      client: options.listen,
      leaf: options.leafListen,
      leafAdvertise: options.leafAdvertise,
      monitor: options.monitorListen,
      cluster: options.routes ? { name: options.name, listen: options.clusterListen, routes: options.routes } : undefined,
      replicas: options.replicas,
      domain: options.name,
      hubProxy: options.hubProxy,
      upstreamOrder: options.upstreamOrder,
      metrics: options.metricsListen,
      signal: io.signal,
      log,
    });
    // The site's bundle issued again (a member added, its certificate renewed) and copied here: the server starts again with it.
    const trustLog = log.child({ node: options.server ?? options.name, actor: "trust" });
    // Clustered, the servers take turns (as hubs do): copied to all of them at once, the site's agents lost every server together.
    const turn = options.routes
      ? restartTurn({ connection: site.connection, holder: options.server ?? options.name, key: leaseKeys.siteRestart, who: "site server", ttlMs: defaultLeaseTtlMs, replicas: options.replicas ?? 3, log: trustLog })
      : undefined;
    // Ready (its nats-server answered /healthz: JetStream current): the turn it took to start again goes to the next server now.
    turn?.ready();
    const restart = siteSecurity && {
      log: trustLog,
      watch: (onReplaced: (what: string) => void) => {
        const watch = watchSiteBundle({ bundle: siteSecurity.files.bundle, site: options.name, server: options.server ?? options.name, log: trustLog, onReplaced: (what) => (turn ? turn.wait(() => onReplaced(what)) : onReplaced(what)) });
        return { stop: () => (watch.stop(), turn?.stop()) };
      },
    };
    return runUntilSignal(io, () => site.stop(), restart, log);
  },
});
