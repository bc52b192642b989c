/** `leafmesh hub`: a cloud hub (nats-server with JetStream domain `hub`, catalog publisher). */
import { commandSummaries } from "./command-list.ts";
import { resolve } from "node:path";
import { removeDepartedHubs } from "../roles/hub-replaces.ts";
import { checkLoopbackReachable, localClientUrl } from "../bus/connect.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { createLogger } from "../lib/log.ts";
import { startHub } from "../roles/hub.ts";
import { ManifestSource } from "../services/controller/manifest-source.ts";
import type { CatalogSource } from "../services/controller/source.ts";
import { resolveHubSecurity, securityOptions } from "./security-options.ts";
import { checkReplicas, dataDirectory, parseLeafAdvertise, serverOptions } from "./server-options.ts";
import { defineCommand } from "./command.ts";
import { option, splitList } from "./options.ts";
import { formatHostPort, parseHostPort, type HostPort } from "../nats/render.ts";
import { checkNodeName, leaseKeys } from "../bus/subjects.ts";
import { defaultLeaseTtlMs } from "../services/controller/lease.ts";
import { runUntilSignal } from "./run-until-signal.ts";
import { watchHubCertificate } from "../trust/bundle-watch.ts";
import { checkPeerHostsInCertificate } from "../trust/hub-certificate.ts";
import { restartTurn } from "../roles/restart-turn.ts";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ensureEnrolment } from "../trust/enrolment.ts";
import { parseDuration } from "../trust/tokens.ts";
import { longestCertificateLifeMs } from "../trust/revocation-list.ts";
import { enrolAccountLacksRevocations, signEnrolAccount } from "../trust/token-revocations.ts";
import { enrolAccountName } from "../trust/enrolment-claims.ts";
import { jwtFile, readKeyState } from "../trust/key-store.ts";
import { withKeysLock } from "../trust/keys-lock.ts";
import { isFlatKeys, unpackFlatKeys, watchFlatKeys } from "../trust/flat-keys.ts";

/** Checks that the keys directory can issue nodes, and sets enrolment up in it (trust/enrolment.ts); returns the accounts that changed. */
async function prepareEnrolment(keys: string): Promise<string[]> {
  for (const file of ["operator.seed", join("ca", "ca.key"), join("accounts", "mesh.seed")]) {
    if (!existsSync(join(keys, file))) {
      throw new LeafmeshError("CONFIG_INVALID", `--enrol: ${keys} lacks ${file}: a hub that enrols nodes needs the whole keys directory (leafmesh keys init), not the hub's copy`);
    }
  }
  return withKeysLock(keys, async () => {
    const changed = await ensureEnrolment(keys);
    // The enrol account goes to the hubs at every start, through the push that keeps their revocations (trust/push.ts):
    // a join token they hold revoked and this directory does not (restored from a backup) is revoked here again.
    const state = readKeyState(keys);
    const enrolJwt = enrolAccountLacksRevocations(keys, state) ? await signEnrolAccount(keys, state) : readFileSync(jwtFile(keys, enrolAccountName), "utf8").trim();
    return changed.includes(enrolJwt) ? changed : [...changed, enrolJwt];
  });
}

/** --node-cert-validity in days: at most 825 (what TLS clients accept, and what the revocation list counts on: trust/revocation-list.ts pruneEnded). */
function nodeCertificateDays(text: string): number {
  const ms = parseDuration(text, "--node-cert-validity");
  if (ms > longestCertificateLifeMs) throw new LeafmeshError("CONFIG_INVALID", `--node-cert-validity ${text}: at most 825d (the longest common TLS clients accept, and what the revocation list counts on to drop ended certificates)`);
  return ms / 86_400_000;
}

/** "198.18.64.1,198.18.64.2:3478,3479" → two hosts and two ports. */
/** "H1,H2:P1,P2"; IPv6 addresses in brackets ("[fd00:66::1],[fd00:66::2]:3478,3479"), as in a URL. */
export function parseHubObserver(text: string): { hosts: [string, string]; ports: [number, number] } {
  const host = String.raw`(\[[0-9a-fA-F:.]+\]|[^,:\[\]]+)`;
  const match = new RegExp(`^${host},${host}:(\\d+),(\\d+)$`).exec(text.trim());
  if (!match) throw new LeafmeshError("CONFIG_INVALID", `'${text}' is not HOST1,HOST2:PORT1,PORT2 (two addresses of this host, two ports; IPv6 in brackets: [fd00::1],[fd00::2]:3478,3479)`);
  const bare = (value: string) => value.replace(/^\[|\]$/g, "");
  return { hosts: [bare(match[1]), bare(match[2])], ports: [Number(match[3]), Number(match[4])] };
}

export const hubCommand = defineCommand({
  name: "hub",
  summary: commandSummaries.hub,
  description: `
A hub runs nats-server (JetStream domain "hub") as a supervised child and, when
given a source (--manifests or --kubeconfig), publishes the service catalog into
KV "mesh-catalog". Several hubs with sources may run: one holds the publisher
lease and writes; another takes over within seconds when it dies. Three hubs
given each other's --routes form one JetStream cluster.`,
  configFile: true,
  options: {
    name: option.parsed({ required: true, value: "NAME", description: "hub name: unique, lowercase letters, digits and '-' (also the nats server_name)" }, (text) => checkNodeName(text, "hub name")),
    data: option.text({ required: true, value: "DIR", description: "directory for the nats-server config, JetStream store and pid file; one leafmesh process per directory (a second is refused)" }),
    listen: option.hostPort({ default: "0.0.0.0:4222", description: "NATS client address" }),
    leafListen: option.hostPort({ default: "0.0.0.0:7422", description: "leafnode address that agents and sites connect to (their --hub URLs)" }),
    leafAdvertise: option.parsed(
      {
        value: "H:P",
        description:
          "the leafnode address this hub names to its leafs (agents, sites) instead of its own --leaf-listen address: nats-server sends its own in every leaf's INFO, and a leaf dials it before the URLs it was given, also after a cut. Give the address leafs must use (a proxy, a NAT's public address, a DNS name) when it is not --leaf-listen; with --keys, a name the hubs' certificate holds (keys hub-cert --hub-hosts) (default: the --leaf-listen address; a wildcard's first non-local address)",
      },
      parseLeafAdvertise,
    ),
    routes: option.list({ value: "URL,…", description: "cluster routes of all hubs of this cluster, e.g. nats-route://hub-2:6222 (enables clustering)" }),
    replaces: option.list({
      value: "NAME,…",
      description:
        "hubs of this cluster gone for good that this hub takes the place of: once it runs, it removes them from the cluster's JetStream group (only those that do not answer), so the streams place their replicas on the hubs that run (with --routes and --keys)",
    }),
    clusterListen: option.hostPort({ default: "0.0.0.0:6222", description: "cluster route address (used with --routes)" }),
    clusterName: option.text({ value: "NAME", description: "cluster name, the same on every hub of one cluster (default: the gateway name, else leafmesh)" }),
    gatewayName: option.text({ value: "NAME", description: "this region's gateway name (enables gateways; one per cluster)" }),
    gatewayListen: option.hostPort({ default: "0.0.0.0:7222", description: "gateway address (used with --gateway-name)" }),
    gateways: option.parsed({ value: "NAME=URL;…", description: "other regions: name=nats://host:7222[,url…] separated by ';'" }, parseGateways),
    observer: option.parsed({ value: "H1,H2:P1,P2", description: "run the NAT observer on two addresses of this host and two ports (agents' --observer H1:P1,P2), so nodes learn their NAT type; IPv6 in brackets: [fd00::1],[fd00::2]:3478,3479" }, parseHubObserver),
    manifests: option.text({ value: "PATH", description: "publish the catalog from a directory of YAML/JSON manifests, or one such file (reloaded on change)" }),
    kubeconfig: option.text({ value: "FILE", description: "publish the catalog from the Kubernetes API (or KubeEdge MetaServer) of this kubeconfig; 'in-cluster' inside a pod" }),
    replicas: option.integer({ value: "N", description: "JetStream replicas of the catalog (default 1, or 3 with --routes)" }),
    enrol: option.flag({
      description: "serve enrolment by token (leafmesh agent --join, tokens from leafmesh keys token): needs --keys to be the whole keys directory (seeds and CA key), which this hub then writes; one hub of the mesh",
    }),
    nodeCertValidity: option.text({
      default: "825d",
      value: "DURATION",
      description:
        "with --enrol: how long the certificates of joining nodes last (s, m, h or d: 90d, 825d; at most 825d), and each renewal; joined agents renew theirs at two thirds of it (825d: the longest common TLS clients accept)",
    }),
    leaseTtl: option.integer({ default: defaultLeaseTtlMs, value: "MS", description: "publisher lease time-to-live in ms: a dead publisher is replaced within about this long (and a hub that does not come back from a restart with new keys holds its cluster's restart turn ten times as long)" }),
    ...securityOptions,
    ...serverOptions({ metricsListen: "127.0.0.1:9464" }),
  },
  async run(options, _positionals, io) {
    if (options.manifests && options.kubeconfig) throw new LeafmeshError("CONFIG_INVALID", "give either --manifests or --kubeconfig, not both");
    checkReplicas(options.replicas, options.routes);
    const dataDir = dataDirectory(options.data, "hub");
    const log = createLogger({ level: options.logLevel });
    // A Secret mounted as --keys (leafmesh keys k8s-secret): unpacked into DATA/keys, which the hub runs from.
    const keysMount = options.keys !== undefined && isFlatKeys(resolve(options.keys)) ? resolve(options.keys) : undefined;
    const keys = keysMount ? join(dataDir, "keys") : options.keys && resolve(options.keys);
    const keysLog = log.child({ node: options.name, actor: "trust" });
    if (keysMount) unpackFlatKeys({ mount: keysMount, target: keys!, seedOnly: options.enrol, log: keysLog });
    let source: CatalogSource | undefined;
    if (options.manifests) source = new ManifestSource({ path: resolve(options.manifests), log: log.child({ node: options.name, actor: "publisher" }) });
    if (options.kubeconfig) {
      const { KubernetesSource } = await import("../services/controller/kubernetes-source.ts");
      let kubeconfig: string | import("@kubernetes/client-node").KubeConfig = resolve(options.kubeconfig);
      if (options.kubeconfig === "in-cluster") {
        // Inside a pod: the service account's token and the API server from the environment.
        const { KubeConfig } = await import("@kubernetes/client-node");
        kubeconfig = new KubeConfig();
        kubeconfig.loadFromCluster();
      }
      source = new KubernetesSource({ kubeconfig, log: log.child({ node: options.name, actor: "publisher" }) });
    }
    const clusterName = options.clusterName ?? options.gatewayName ?? "leafmesh";
    if (options.gatewayName && clusterName !== options.gatewayName) {
      throw new LeafmeshError("CONFIG_INVALID", `--cluster-name '${clusterName}' must equal --gateway-name '${options.gatewayName}': nats-server names a region's gateway after its cluster`);
    }
    if (options.replaces && (!options.routes || !options.keys)) {
      throw new LeafmeshError("CONFIG_INVALID", "--replaces needs --routes and --keys: it removes hubs from a cluster's JetStream group as the system user");
    }
    if (options.gatewayName && !options.routes) {
      throw new LeafmeshError("CONFIG_INVALID", "--gateway-name needs --routes: JetStream across regions runs clustered (a one-hub region lists its own route URL)");
    }
    let enrolAccounts: string[] | undefined;
    // Checked before enrolment is set up in the keys directory: a value refused leaves nothing written.
    const certificateDays = nodeCertificateDays(options.nodeCertValidity);
    if (options.enrol) {
      if (!keys) throw new LeafmeshError("CONFIG_INVALID", "--enrol needs --keys: the hub issues joining nodes from the mesh's keys directory");
      checkLoopbackReachable(options.listen, "--listen", "with --enrol, the hub's enrolment service (a loopback-only user of the enrol account)");
      // Before the security is loaded: the client port must trust the enrolment CA from the start.
      enrolAccounts = await prepareEnrolment(keys);
    }
    const security = resolveHubSecurity({ keys, insecure: options.insecure }, dataDir, log);
    if (security) {
      checkPeerHostsInCertificate(security.files.cert, keys!, [
        { flag: "--routes", urls: options.routes ?? [] },
        { flag: "--gateways", urls: (options.gateways ?? []).flatMap((gateway) => gateway.urls) },
        // Leafs dial the advertised address before the URLs they were given, and check the hub's certificate by it.
        ...(options.leafAdvertise ? [{ flag: "--leaf-advertise", urls: [`tls://${formatHostPort(options.leafAdvertise)}`], dialledBy: "agents and sites dial the advertised address first and check the hub's certificate" }] : []),
      ]);
    }
    const hub = await startHub({
      security,
      keysDir: keys || undefined,
      name: options.name,
      dataDir,
      client: options.listen,
      leaf: options.leafListen,
      leafAdvertise: options.leafAdvertise,
      monitor: options.monitorListen,
      cluster: options.routes ? { name: clusterName, listen: options.clusterListen, routes: options.routes } : undefined,
      gateway: options.gatewayName ? { name: options.gatewayName, listen: options.gatewayListen, gateways: options.gateways ?? [] } : undefined,
      source,
      observer: options.observer,
      replicas: options.replicas,
      leaseTtlMs: options.leaseTtl,
      metrics: options.metricsListen,
      enrol: enrolAccounts && { changedAtStart: enrolAccounts, certificateDays },
      signal: io.signal,
      log,
    });
    if (options.replaces && security) {
      await removeDepartedHubs({ servers: [localClientUrl(options.listen)], connectOptions: security.systemConnectOptions, names: options.replaces, self: options.name, log: log.child({ node: options.name, actor: "fabric" }) });
    }
    // The hubs' certificate issued again (keys hub-cert) and copied here: the hub starts again in place with it.
    const trustLog = keysLog;
    // Clustered, the hubs take turns: copied to all of them at once, they would restart together and lose their quorum.
    const turn = options.routes ? restartTurn({ connection: hub.connection, holder: options.name, key: leaseKeys.hubRestart, who: "hub", ttlMs: options.leaseTtl, replicas: options.replicas ?? 3, log: trustLog }) : undefined;
    // Ready (its nats-server answered /healthz: JetStream current): the turn it took to start again goes to the next hub now.
    turn?.ready();
    const restart = security && {
      log: trustLog,
      watch: (onReplaced: (what: string) => void) => {
        const watch = watchHubCertificate({ files: security.files, name: options.name, log: trustLog, onReplaced: (what) => (turn ? turn.wait(() => onReplaced(what)) : onReplaced(what)) });
        return { stop: () => (watch.stop(), turn?.stop()) };
      },
    };
    // Any hub but the enrolling one takes the Secret again when it changes (its certificate watch then restarts it in turn).
    const keysWatch = keysMount && !options.enrol ? watchFlatKeys({ mount: keysMount, target: keys!, log: keysLog }) : undefined;
    return runUntilSignal(io, () => (keysWatch?.stop(), hub.stop()), restart, log);
  },
});

/** "eu=nats://a:7222,nats://b:7222; us=nats://c:7222" → the other regions' gateways. */
function parseGateways(text: string): { name: string; urls: string[] }[] {
  return text
    .split(";")
    .map((part) => part.trim())
    .filter(Boolean)
    .map((part) => {
      const [name, urls] = part.split("=");
      if (!name || !urls || splitList(urls).length === 0) throw new LeafmeshError("CONFIG_INVALID", `'${part}' is not name=url[,url…]`);
      return { name: name.trim(), urls: splitList(urls) };
    });
}
