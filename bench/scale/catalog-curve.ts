/**
 * Curve (a): cost against catalog size. Each size runs the fabric benchmark's
 * scenario (bench/fabric/scenario.ts, the same code, not a copy): the catalog
 * written at the hub and held by a fresh agent, leafmesh beside plain NATS KV on
 * the same nats-server configs, then single changes hub → node.
 */
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
  agentServerRssMiB: number;
  plainServerRssMiB: number;
  changeP50: number;
  changeP99: number;
  plainChangeP50: number;
  plainChangeP99: number;
  changes: number;
}

export async function measureCatalogCurve(sizes: number[], changes: number): Promise<CatalogPoint[]> {
  const points: CatalogPoint[] = [];
  for (const services of sizes) {
    console.error(`scale: catalog of ${services} services`);
    const entries = normalisedCatalog(services);
    const plain = await measurePlain(entries, changes);
    const leafmesh = await measureLeafmesh(services, entries, changes);
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
