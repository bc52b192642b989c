/**
 * The benchmark's cluster: 1,000 ClusterIP Services in 10 namespaces, the same
 * names for leafmesh (catalog), unbound (local-data) and dnsmasq (host-record).
 */
import type { CatalogObject } from "../../bus/catalog.ts";
import { service, slice } from "../../test/support/dns-catalog.ts";

export const benchServiceCount = 1000;

export interface BenchName {
  name: string;
  ip: string;
}

export function benchNames(count = benchServiceCount): BenchName[] {
  return Array.from({ length: count }, (_, index) => ({
    name: `svc-${index}.ns-${index % 10}.svc.cluster.local`,
    ip: `10.96.${Math.floor(index / 250)}.${(index % 250) + 1}`,
  }));
}

export function benchCatalog(count = benchServiceCount): CatalogObject[] {
  return benchNames(count).flatMap(({ name, ip }, index) => {
    const [svc, namespace] = name.split(".");
    return [service(namespace, svc, { clusterIPs: [ip] }), slice(namespace, svc, `${svc}-1`, [{ ip: `10.${100 + (index % 100)}.${Math.floor(index / 100)}.1` }])];
  });
}
