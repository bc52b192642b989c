/**
 * What a running agent holds, read from outside as an operator would: its open file descriptors
 * (/proc/PID/fd) and those of its nats-server, the handles and timers Node reports on /metrics,
 * the tables its actors report in `leafmesh status` (proxy connections and UDP flows, admission,
 * gateway connections, DNS TCP clients, SOCKS clients), and its nats-server's connections and
 * subscriptions (/connz, /subsz). Two readings of a settled agent compare equal unless something leaked.
 *
 * ```ts
 * const before = await holdingsOf(agent, monitorPort);
 * // ... churn ...
 * await eventually(async () => sameHoldings(before, await holdingsOf(agent, monitorPort)), 10_000, "edge-a to settle");
 * ```
 */
import { readdirSync, readFileSync } from "node:fs";
import { request } from "node:http";
import type { LeafmeshProcess } from "./processes.ts";

export type Holdings = Record<string, number>;

function openDescriptors(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * The pids whose parent is `pid` (the agent's nats-server): the kernel's list of the main thread's
 * children (Node spawns from it), one read; where the kernel has no such file (or lists none), a scan of every
 * process's stat (~0.15 s of CPU a reading on a machine with a few hundred processes).
 */
function childrenOf(pid: number): number[] {
  try {
    const listed = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").split(" ").filter((entry) => entry !== "").map(Number);
    if (listed.length > 0) return listed;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const children: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // Field 4 of /proc/PID/stat, after the command name in parentheses (which may hold spaces).
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1] === String(pid)) children.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

/** GET on a fresh connection (no keep-alive: a pooled one would be counted among the agent's descriptors). */
function fetchText(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const call = request(url, { agent: false, headers: { connection: "close" }, timeout: 5_000 }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("end", () => resolve(body));
      response.on("error", reject);
    });
    call.on("error", reject);
    call.on("timeout", () => call.destroy(new Error(`no answer from ${url} within 5 s`)));
    call.end();
  });
}

/** Node's gauges of the process (lib/prom.ts): handles, and the active resources by type (timers, sockets, servers). */
function processGauges(metrics: string): Holdings {
  const gauges: Holdings = {};
  for (const line of metrics.split("\n")) {
    const handles = line.match(/^leafmesh_process_nodejs_active_handles_total\{[^}]*\} (\d+)/);
    if (handles) gauges["node handles"] = Number(handles[1]);
    const resource = line.match(/^leafmesh_process_nodejs_active_resources\{[^}]*type="(\w+)"[^}]*\} (\d+)/);
    if (resource) gauges[`node ${resource[1]}`] = Number(resource[2]);
    const readers = line.match(/^leafmesh_read_buffer_directions\{[^}]*\} (\d+)/);
    if (readers) gauges["joined directions reading"] = Number(readers[1]);
  }
  return gauges;
}

/** The gauges the agent's actors report in status (a table that grows with a leak shows here). */
function actorTables(actors: { name: string; detail?: Record<string, unknown> }[]): Holdings {
  const tables: Holdings = {};
  for (const { name, detail } of actors) {
    if (!detail) continue;
    if (name === "traffic") {
      tables["traffic connections and flows"] = detail.connections as number;
      tables["traffic bytes buffered"] = detail.bufferedBytes as number;
      for (const [key, value] of Object.entries(detail.admission as Record<string, number>)) tables[`traffic admission ${key}`] = value;
    }
    if (name === "gateway") tables["gateway connections"] = (detail.listeners as { connections: number }[]).reduce((sum, listener) => sum + listener.connections, 0);
    if (name === "dns") tables["dns tcp clients"] = detail.tcpClients as number;
    if (name === "socks") for (const key of ["clients", "dialing", "joined", "waiting"]) tables[`socks ${key}`] = detail[key] as number;
  }
  return tables;
}

/** Everything above for one agent; `monitorPort`: its nats-server's monitoring port (--monitor-listen). */
export async function holdingsOf(agent: LeafmeshProcess & { metricsUrl: string }, monitorPort: number): Promise<Holdings> {
  const pid = agent.child.pid!;
  const servers = childrenOf(pid);
  // Descriptors first: the status request below is a connection to the agent's nats-server while it lasts.
  const holdings: Holdings = { "agent descriptors": openDescriptors(pid), "nats-server descriptors": servers.reduce((sum, server) => sum + openDescriptors(server), 0) };
  const connz = JSON.parse(await fetchText(`http://127.0.0.1:${monitorPort}/connz`)) as { num_connections: number };
  const subsz = JSON.parse(await fetchText(`http://127.0.0.1:${monitorPort}/subsz`)) as { num_subscriptions: number };
  holdings["nats-server connections"] = connz.num_connections;
  holdings["nats-server subscriptions"] = subsz.num_subscriptions;
  Object.assign(holdings, processGauges(await fetchText(`${agent.metricsUrl}/metrics`)));
  const view = await agent.view();
  Object.assign(holdings, actorTables(view.status.actors as { name: string; detail?: Record<string, unknown> }[]));
  return holdings;
}

/** What differs between two readings, as `name: before → after` lines; empty when they match. */
export function holdingsDiff(before: Holdings, after: Holdings): string[] {
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...names].filter((name) => before[name] !== after[name]).map((name) => `${name}: ${before[name]} → ${after[name]}`);
}
