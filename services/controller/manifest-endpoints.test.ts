/**
 * A Service without a selector and the Endpoints written for it by hand, in a
 * manifest directory (the pattern Kubernetes documents for a backend outside
 * the cluster): read as the EndpointSlice Kubernetes mirrors it into, so the
 * Service has its backends. Endpoints was ignored without a word, and such a
 * Service refused every connection. The real ManifestSource on a directory.
 */
import { afterEach, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { silentLogger } from "../../lib/log.ts";
import { writeManifest } from "../../test/support/manifests.ts";
import { tempDir } from "../../test/support/processes.ts";
import { planServicePorts } from "../traffic/plan.ts";
import { ManifestSource } from "./manifest-source.ts";
import type { CatalogRejection } from "./source.ts";

const sources: ManifestSource[] = [];
afterEach(async () => {
  await Promise.all(sources.splice(0).map((source) => source.stop()));
});

const service = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "db", namespace: "shop" },
  spec: { clusterIP: "198.19.0.60", ports: [{ name: "pg", port: 5432, targetPort: 5432 }] },
};
const endpoints = (subsets: object[]) => ({ apiVersion: "v1", kind: "Endpoints", metadata: { name: "db", namespace: "shop" }, subsets });

async function read(objects: object[]) {
  const directory = tempDir();
  writeManifest(directory, "db.yaml", objects);
  const source = new ManifestSource({ path: directory, log: silentLogger(), rescanMs: 200, debounceMs: 20 });
  sources.push(source);
  const rejections: CatalogRejection[] = [];
  source.onReject((rejection) => rejections.push(rejection));
  await source.start();
  return { source, rejections };
}

describe("Endpoints in manifests", () => {
  it("is read as its mirrored EndpointSlice: ready and not-ready addresses, ports, node names; the Service is proxied to them", async () => {
    const { source, rejections } = await read([
      service,
      endpoints([{ addresses: [{ ip: "198.18.20.1", nodeName: "edge-a" }, { ip: "198.18.20.2" }], notReadyAddresses: [{ ip: "198.18.20.3" }], ports: [{ name: "pg", port: 5432, protocol: "TCP" }] }]),
    ]);
    expect(rejections).toEqual([]);
    const slice = source.snapshot().get("eps.shop.db-mirrored");
    expect(slice).toMatchObject({
      kind: "EndpointSlice",
      serviceName: "db",
      addressType: "IPv4",
      ports: [{ name: "pg", protocol: "TCP", port: 5432 }],
      endpoints: [
        { addresses: ["198.18.20.1"], nodeName: "edge-a", conditions: { ready: true } },
        { addresses: ["198.18.20.2"], conditions: { ready: true } },
        { addresses: ["198.18.20.3"], conditions: { ready: false } },
      ],
    });
    const feed = new IndexFeed();
    for (const [key, object] of source.snapshot()) feed.reader.apply({ op: "put", key, object });
    expect(planServicePorts(feed.reader).plans.get("shop/db:pg/TCP")?.endpoints.map((endpoint) => endpoint.key)).toEqual(["198.18.20.1:5432", "198.18.20.2:5432"]);
  });

  it("refuses what one slice cannot say, naming the field; honours the skip-mirror label", async () => {
    const mixed = await read([service, endpoints([{ addresses: [{ ip: "198.18.20.1" }, { ip: "fd00::1" }], ports: [{ name: "pg", port: 5432 }] }])]);
    expect(mixed.rejections).toEqual([expect.objectContaining({ object: "Endpoints shop/db", field: "subsets", message: expect.stringContaining("mixes IPv4 and IPv6") })]);
    const ports = await read([service, endpoints([{ addresses: [{ ip: "198.18.20.1" }], ports: [{ name: "pg", port: 5432 }] }, { addresses: [{ ip: "198.18.20.2" }], ports: [{ name: "pg", port: 5433 }] }])]);
    expect(ports.rejections).toEqual([expect.objectContaining({ object: "Endpoints shop/db", field: "subsets[1].ports" })]);
    const skipped = await read([service, { ...endpoints([{ addresses: [{ ip: "198.18.20.1" }] }]), metadata: { name: "db", namespace: "shop", labels: { "endpointslice.kubernetes.io/skip-mirror": "true" } } }]);
    expect(skipped.rejections).toEqual([]);
    expect(skipped.source.snapshot().has("eps.shop.db-mirrored")).toBe(false);
  });
});
