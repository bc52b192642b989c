/**
 * Curve (a): cost against catalog size. Each size runs the fabric benchmark's
 * scenario (bench/fabric/scenario.ts, the same code, not a copy): the catalog
 * written at the hub and held by a fresh agent, leafmesh beside plain NATS KV on
 * the same nats-server configs, then single changes hub → node.
 */
import { readdirSync, readFileSync } from "node:fs";
import { percentile } from "../table.ts";
import { normalisedCatalog } from "../fabric/catalog.ts";
import { measureLeafmesh, measurePlain } from "../fabric/scenario.ts";

export interface CatalogPoint {
  services: number;
  hubWriteMs: number;
  plainWriteMs: number;
  hubCpuMs: number;
  hubRssMiB: number;
  agentHoldsMs: number;
  plainHoldsMs: number;
  agentCpuLoadMs: number;
  agentRssLoadedMiB: number;
  agentRssMiB: number;
  agentRssAtRestMiB: number;
  agentServerRssMiB: number;
  plainServerRssMiB: number;
  changeP50: number;
  changeP99: number;
  plainChangeP50: number;
  plainChangeP99: number;
  changes: number;
  /** Why this size could not be measured (a wall the agent hit), if it could not. */
  failed?: string;
}

/** Open file descriptors of a process, and its limit (/proc). */
export function openFiles(pid: number): { open: number; limit: number } {
  const limit = Number(/Max open files\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, "utf8"))?.[1] ?? Infinity);
  return { open: readdirSync(`/proc/${pid}/fd`).length, limit };
}

/**
 * Ends the wait once the agent holds as many descriptors as it may: past the process's open-files
 * limit it can never hold the catalog, and waiting out the timeout would tell nothing more. (Until
 * 2026-12-05 traffic listened once per TCP service port and 50,000 services met this; TCP service
 * ports now share one listener, services/traffic/shared-listener.ts, and only UDP ones take a socket each.)
 */
function failAtDescriptorLimit(pid: number): void {
  const { open, limit } = openFiles(pid);
  if (open >= limit - 8) throw new Error(`the agent holds ${open} file descriptors, its limit (ulimit -n ${limit})`);
}

export async function measureCatalogCurve(sizes: number[], changes: number): Promise<CatalogPoint[]> {
  const points: CatalogPoint[] = [];
  for (const services of sizes) {
    console.error(`scale: catalog of ${services} services`);
    const entries = normalisedCatalog(services);
    const plain = await measurePlain(entries, changes);
    const leafmesh = await measureLeafmesh(services, entries, changes, { whileLoading: failAtDescriptorLimit, loadTimeoutMs: 300_000 }).catch((error: Error) => error);
    if (leafmesh instanceof Error) {
      console.error(`scale: ${services} services: ${leafmesh.message}`);
      const hub = (leafmesh as Error & { hub?: { writeMs: number; hubCpuMs: number; hubRssMiB: number } }).hub;
      points.push({
        services, hubWriteMs: hub?.writeMs ?? NaN, plainWriteMs: plain.writeMs, hubCpuMs: hub?.hubCpuMs ?? NaN, hubRssMiB: hub?.hubRssMiB ?? NaN, agentHoldsMs: NaN, plainHoldsMs: plain.clientHoldsMs, agentCpuLoadMs: NaN,
        agentRssLoadedMiB: NaN, agentRssMiB: NaN, agentRssAtRestMiB: NaN, agentServerRssMiB: NaN, plainServerRssMiB: plain.serverRssMiB, changeP50: NaN, changeP99: NaN,
        plainChangeP50: percentile(plain.latencies, 50), plainChangeP99: percentile(plain.latencies, 99), changes, failed: leafmesh.message.split("\n")[0],
      });
      continue;
    }
    points.push({
      services,
      hubWriteMs: leafmesh.writeMs,
      plainWriteMs: plain.writeMs,
      hubCpuMs: leafmesh.hubCpuMs,
      hubRssMiB: leafmesh.hubRssMiB,
      agentHoldsMs: leafmesh.nodeHoldsMs,
      plainHoldsMs: plain.clientHoldsMs,
      agentCpuLoadMs: leafmesh.agentCpuLoadMs,
      agentRssLoadedMiB: leafmesh.rssLoadedMiB,
      agentRssAtRestMiB: leafmesh.rssAtRestMiB,
      agentRssMiB: leafmesh.rssMiB,
      agentServerRssMiB: leafmesh.serverRssMiB,
      plainServerRssMiB: plain.serverRssMiB,
      changeP50: percentile(leafmesh.latencies, 50),
      changeP99: percentile(leafmesh.latencies, 99),
      plainChangeP50: percentile(plain.latencies, 50),
      plainChangeP99: percentile(plain.latencies, 99),
      changes,
    });
  }
  return points;
}
