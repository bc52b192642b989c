/**
 * `leafmesh drill`: a partition drill an operator runs on a node or a site
 * server. It cuts the node's upstream on purpose for N seconds — an nftables
 * table of its own dropping only the traffic to and from the upstreams'
 * leafnode ports (drill-report.ts), no route and no other rule touched — checks
 * the services the node serves (DNS names at its cluster DNS, TCP to their
 * cluster IPs) every second, restores the link, waits until the node's catalog
 * mirror has caught up with its upstream, and prints a report (or JSON).
 *
 * It refuses on a hub. It restores the link when interrupted (Ctrl-C, kill);
 * if it is killed outright, the cut's set elements expire in the kernel by
 * themselves a grace period after the planned end.
 */
import { commandSummaries } from "./command-list.ts";
import { execFileSync } from "node:child_process";
import { lookup, Resolver } from "node:dns/promises";
import { connect as netConnect, isIP } from "node:net";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { rpcRequest } from "../bus/bus.ts";
import { connectClient } from "./client-connect.ts";
import { rpc } from "../bus/rpc.ts";
import type { NodeStatus } from "../bus/status.ts";
import { buckets } from "../bus/subjects.ts";
import { runCommand } from "../lib/command.ts";
import { LeafmeshError, describeError } from "../lib/errors.ts";
import { defineCommand } from "./command.ts";
import { option } from "./options.ts";
import { clientSecurityOptions } from "./security-options.ts";
import { fetchNodeView } from "./status.ts";
import { cutGraceSeconds, drillTable, formatDrillReport, nftCutScript, summarizeChecks, totalsOf, type CheckSample, type CutTarget, type DrillReport } from "./drill-report.ts";

interface Check {
  name: string;
  kind: "dns" | "tcp";
  target: string;
  run(timeoutMs: number): Promise<void>;
}

/** A name answered with an address by the node's cluster DNS. */
function dnsCheck(name: string, server: { host: string; port: number }): Check {
  return {
    name: `dns ${name}`,
    kind: "dns",
    target: name,
    async run(timeoutMs) {
      const resolver = new Resolver({ timeout: timeoutMs, tries: 1 });
      resolver.setServers([`${server.host}:${server.port}`]);
      const addresses = await resolver.resolve4(name);
      if (addresses.length === 0) throw new Error("no address");
    },
  };
}

/**
 * A TCP connection to a cluster IP that the mesh keeps: connected, and either the server
 * spoke or the connection stayed up for `holdMs` (a proxied connection whose backend
 * cannot be reached is reset at once).
 */
function tcpCheck(host: string, port: number, label: string, holdMs: number): Check {
  return {
    name: `tcp ${label}`,
    kind: "tcp",
    target: `${host}:${port} (${label})`,
    run: (timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        const socket = netConnect({ host, port, timeout: timeoutMs });
        let timer: NodeJS.Timeout | undefined;
        const done = (error?: Error) => {
          clearTimeout(timer);
          socket.removeAllListeners();
          socket.on("error", () => undefined);
          socket.destroy();
          if (error) reject(error);
          else resolve();
        };
        socket.once("connect", () => {
          socket.setTimeout(0);
          timer = setTimeout(() => done(), holdMs);
        });
        socket.once("data", () => done());
        socket.once("timeout", () => done(new Error(`no connection within ${timeoutMs} ms`)));
        socket.once("error", (error: NodeJS.ErrnoException) => done(new Error(error.code ?? error.message)));
        socket.once("close", () => done(new Error("closed by the far end before it spoke")));
      }),
  };
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });

async function statusOf(connection: NatsConnection, node: string): Promise<NodeStatus | undefined> {
  return rpcRequest(connection, node, rpc.status, undefined, 2_000).catch(() => undefined);
}

const upstreamUp = (status: NodeStatus | undefined) => status?.links.some((link) => link.direction === "upstream" && link.up) ?? false;

/**
 * Where the catalog stands at the node and at its upstream: the last sequence of the node's
 * mirror, and of the stream it mirrors (asked through the leaf, in the upstream's JetStream
 * domain, named by the mirror's own config). A mirror keeps its origin's sequence numbers,
 * which are the KV revisions the controller's catalog events carry.
 */
async function catalogPositions(connection: NatsConnection): Promise<{ local: number; upstream?: number; error?: string }> {
  const stream = `KV_${buckets.catalog}`;
  let local = 0;
  try {
    const info = await (await jetstreamManager(connection, { timeout: 2_000, checkAPI: false })).streams.info(stream);
    local = info.state.last_seq;
    const domain = /^\$JS\.(.+)\.API$/.exec(info.config.mirror?.external?.api ?? "")?.[1] ?? "hub";
    const upstream = await (await jetstreamManager(connection, { domain, timeout: 2_000, checkAPI: false })).streams.info(stream);
    return { local, upstream: upstream.state.last_seq };
  } catch (error) {
    return { local, error: describeError(error) };
  }
}

async function resolveTargets(urls: string[]): Promise<(CutTarget & { url: string })[]> {
  return Promise.all(
    urls.map(async (url) => {
      const parsed = new URL(url);
      const host = parsed.hostname.replace(/^\[|\]$/g, "");
      const address = isIP(host) ? host : (await lookup(host)).address;
      return { url, address, port: Number(parsed.port || 7422) };
    }),
  );
}

async function nft(script: string): Promise<void> {
  const result = await runCommand(["nft", "-f", "-"], { input: script, timeoutMs: 10_000 });
  if (result.code !== 0) throw new LeafmeshError("TOOL_MISSING", `nft could not make the cut (the drill needs root and nftables): ${result.stderr.trim()}`);
}

async function droppedPackets(): Promise<number | undefined> {
  const result = await runCommand(["nft", "-j", "list", "table", "inet", drillTable], { timeoutMs: 5_000 });
  if (result.code !== 0) return undefined;
  const rules = (JSON.parse(result.stdout) as { nftables: { rule?: { expr: { counter?: { packets: number } }[] } }[] }).nftables;
  return rules.reduce((sum, entry) => sum + (entry.rule?.expr.reduce((inner, expr) => inner + (expr.counter?.packets ?? 0), 0) ?? 0), 0);
}

/** Deletes the drill's table (the restore); true when it is gone. Synchronous too, for the process's exit. */
function restoreSync(): boolean {
  try {
    execFileSync("nft", ["delete", "table", "inet", drillTable], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

async function restore(): Promise<boolean> {
  const result = await runCommand(["nft", "delete", "table", "inet", drillTable], { timeoutMs: 10_000 });
  if (result.code === 0) return true;
  // Gone already (the kernel cannot delete what is not there): restored all the same.
  return (await runCommand(["nft", "list", "table", "inet", drillTable], { timeoutMs: 5_000 })).code !== 0;
}

export const drillCommand = defineCommand({
  name: "drill",
  summary: commandSummaries.drill,
  description: `
Runs on an agent or a site server, as root (nftables). Cuts the node's leaf
link to its upstreams (every --hub URL it was given) with an nftables table of
its own, which drops only the traffic to and from those addresses and ports:
no route and no other software's rule is touched. Every second it checks the
services of the node's catalog (their DNS names at the node's cluster DNS,
and a TCP connection to their cluster IPs), restores the link after
--seconds, and waits until the catalog mirror has caught up with the
upstream. The report says how many checks passed, the longest gap, when the
node saw its link go down and up, and the time to catch up (docs/drill.md).

Refuses on a hub. Ctrl-C or kill restores the link at once; if the drill is
killed outright (SIGKILL), the kernel lifts the cut by itself
--grace seconds after its planned end.`,
  options: {
    ...clientSecurityOptions,
    nats: option.natsUrl({ default: "nats://127.0.0.1:4222", description: "client URL of the node's NATS server (the agent's --nats-listen)" }),
    seconds: option.integer({ default: 30, min: 1, max: 3_600, value: "N", description: "how long the upstream stays cut" }),
    services: option.list({ value: "NS/NAME,…", description: "the services to check (default: every service of the catalog with a cluster IP, up to --max-services)" }),
    maxServices: option.integer({ default: 20, min: 1, value: "N", description: "at most this many services are checked when --services is not given" }),
    clusterDomain: option.text({ default: "cluster.local", value: "DOMAIN", description: "the cluster domain the node's DNS answers for" }),
    intervalMs: option.integer({ default: 1_000, min: 100, value: "MS", description: "how often every check runs" }),
    catchUpTimeout: option.integer({ default: 120, min: 1, value: "S", description: "how long to wait for the catalog to catch up after the restore" }),
    grace: option.integer({ default: cutGraceSeconds, min: 1, max: 3_600, value: "S", description: "if the drill is killed outright, the kernel lifts the cut this long after its planned end" }),
    json: option.flag({ description: "print the report as JSON" }),
  },
  async run(options, _positionals, io) {
    const connection = await connectClient(options, { command: "drill", stderr: io.stderr });
    try {
      const { status, services } = await fetchNodeView(connection, 5_000);
      if (status.role === "hub") throw new LeafmeshError("CONFIG_INVALID", `${status.node} is a hub: a drill cuts a node's or a site's upstream, and a hub has none (run it on an agent or a site server)`);
      const urls = status.upstreams ?? status.links.filter((link) => link.direction === "upstream" && link.url).map((link) => link.url!);
      if (urls.length === 0) throw new LeafmeshError("CONFIG_INVALID", `${status.node} names no upstream to cut`);
      const targets = await resolveTargets(urls);

      const dns = status.actors.find((actor) => actor.name === "dns")?.detail?.address as { host: string; port: number } | undefined;
      const wanted = options.services ? new Set(options.services) : undefined;
      const chosen = services.filter((service) => (wanted ? wanted.has(`${service.namespace}/${service.name}`) : service.clusterIPs.length > 0 && service.type !== "ExternalName")).slice(0, wanted ? undefined : options.maxServices);
      if (wanted && chosen.length < wanted.size) {
        const missing = [...wanted].filter((name) => !chosen.some((service) => `${service.namespace}/${service.name}` === name));
        throw new LeafmeshError("CONFIG_INVALID", `--services: not in ${status.node}'s catalog: ${missing.join(", ")}`);
      }
      const checks: Check[] = [];
      for (const service of chosen) {
        if (dns) checks.push(dnsCheck(`${service.name}.${service.namespace}.svc.${options.clusterDomain}`, dns));
        const tcp = service.ports.find((port) => port.endsWith("/TCP"));
        const ip = service.clusterIPs.find((address) => isIP(address) === 4);
        if (tcp && ip && service.type !== "Headless") checks.push(tcpCheck(ip, Number(/(\d+)\/TCP$/.exec(tcp)![1]), `${service.namespace}/${service.name}`, 250));
      }

      const samples: CheckSample[] = [];
      const checkTimeout = Math.min(800, options.intervalMs);
      let cutAt = performance.now();
      const round = () =>
        Promise.all(
          checks.map(async (check) => {
            const atMs = Math.round(performance.now() - cutAt);
            try {
              await check.run(checkTimeout);
              samples.push({ check: check.name, atMs, ok: true });
            } catch (error) {
              samples.push({ check: check.name, atMs, ok: false, error: describeError(error) });
            }
          }),
        );
      // The baseline: whether each check works before anything is cut (stamped before the cut).
      cutAt = performance.now() + 10_000;
      await round();

      const objectsBefore = status.catalogObjects;
      // The controller's position: the mirror's at the start, then every catalog event it publishes.
      let controllerRevision = (await catalogPositions(connection)).local;
      const catalogEvents = connection.subscribe(`mesh.${status.node}.controller.catalog`, {
        callback: (_error, message) => {
          try {
            controllerRevision = Math.max(controllerRevision, Number((message.json() as { revision?: number }).revision ?? 0));
          } catch {
            // Not a catalog event: nothing to learn from it.
          }
        },
      });
      const startedAt = new Date().toISOString();
      const planned = options.seconds;
      // Listened for before the cut goes in: a signal while nft applies it (the cut already in force) is an
      // interruption too. Listened for after, it had passed unseen: the drill restored the link and went on to
      // its catch-up as if its time had run out, and ended with 0 instead of 130.
      let interrupted: string | undefined;
      const onAbort = () => (interrupted = "a signal (Ctrl-C or kill)");
      if (io.signal.aborted) onAbort();
      else io.signal.addEventListener("abort", onAbort, { once: true });
      await nft(nftCutScript(targets, planned + options.grace));
      cutAt = performance.now();
      // Restore on the way out whatever happens: interrupted, failed, or the process ending.
      let restored = false;
      const onExit = () => {
        if (!restored) restoreSync();
      };
      process.once("exit", onExit);
      const leaf: DrillReport["leaf"] = {};
      let heldMs = 0;
      let dropped: number | undefined;
      try {
        while (!io.signal.aborted && performance.now() - cutAt < planned * 1_000) {
          const tick = performance.now();
          const [, nodeStatus] = await Promise.all([round(), statusOf(connection, status.node)]);
          if (leaf.downAfterMs === undefined && nodeStatus && !upstreamUp(nodeStatus)) leaf.downAfterMs = Math.round(performance.now() - cutAt);
          await sleep(Math.max(0, options.intervalMs - (performance.now() - tick)), io.signal);
        }
      } finally {
        heldMs = Math.round(performance.now() - cutAt);
        dropped = await droppedPackets().catch(() => undefined);
        restored = await restore();
        process.removeListener("exit", onExit);
      }
      const restoredAt = performance.now();

      // Catch-up: the leaf up again, and the node's controller holding every change the upstream's catalog holds.
      let caughtUpMs: number | undefined;
      let how = "the leaf link up, and the node's catalog (its controller's events) at the upstream catalog's last revision";
      let nodeStatus: NodeStatus | undefined;
      // Interrupted: restored, and out at once (a second Ctrl-C would end the process anyway).
      if (!interrupted) {
        let nextRound = performance.now();
        const deadline = restoredAt + options.catchUpTimeout * 1_000;
        let positionsError: string | undefined;
        while (performance.now() < deadline && caughtUpMs === undefined) {
          if (performance.now() >= nextRound) {
            // The checks go on, so a gap that lasts past the restore is measured to its end.
            await round();
            nextRound = performance.now() + options.intervalMs;
          }
          nodeStatus = await statusOf(connection, status.node);
          if (nodeStatus && upstreamUp(nodeStatus) && leaf.upAfterRestoreMs === undefined) leaf.upAfterRestoreMs = Math.round(performance.now() - restoredAt);
          const positions = upstreamUp(nodeStatus) ? await catalogPositions(connection) : undefined;
          if (positions?.upstream !== undefined && controllerRevision >= positions.upstream) {
            caughtUpMs = Math.round(performance.now() - restoredAt);
            how = `${how}: revision ${positions.upstream}`;
          } else {
            if (positions?.error) positionsError = positions.error;
            await sleep(250, io.signal);
          }
        }
        if (caughtUpMs === undefined && positionsError) how = `${how} (the catalogs' positions could not be read: ${positionsError})`;
        // One last round once caught up: the services answer with the upstream back.
        await round();
      }
      io.signal.removeEventListener("abort", onAbort);
      catalogEvents.unsubscribe();
      nodeStatus = (await statusOf(connection, status.node)) ?? nodeStatus;

      const summaries = summarizeChecks(checks, samples);
      const report: DrillReport = {
        node: status.node,
        role: status.role,
        upstreams: targets,
        cut: { startedAt, plannedSeconds: planned, heldMs, ...(interrupted ? { interrupted } : {}), restored, ...(dropped !== undefined ? { droppedPackets: dropped } : {}) },
        leaf,
        checks: summaries,
        totals: totalsOf(summaries),
        catalog: { objectsBefore, objectsAfter: nodeStatus?.catalogObjects ?? objectsBefore, caughtUp: caughtUpMs !== undefined, ...(caughtUpMs !== undefined ? { caughtUpMs } : {}), how },
      };
      io.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : formatDrillReport(report));
      if (!restored) io.stderr.write(`leafmesh drill: the cut could not be removed (nft delete table inet ${drillTable}); the kernel lifts it ${options.grace} s after its planned end\n`);
      return interrupted ? 130 : restored && report.catalog.caughtUp ? 0 : 1;
    } finally {
      await connection.close();
    }
  },
});
