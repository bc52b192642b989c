/**
 * The benchmark's catalog: `count` Services in namespace `bench`, each with one
 * EndpointSlice of 3 endpoints on three nodes, as raw Kubernetes manifests (for
 * `leafmesh hub --manifests`) and as the normalised objects the publisher
 * writes (for the plain-NATS baseline's puts).
 */
import { catalogKey, type EndpointSlice, type Service } from "../../bus/catalog.ts";
import { writeManifest } from "../../test/support/manifests.ts";

/** Cluster IPs from 198.19.0.0/16 and endpoints from 198.18.0.0/16: up to 65,536 services. */
const clusterIp = (index: number) => `198.19.${index >> 8}.${index & 255}`;
const endpointIp = (index: number, replica: number) => `198.18.${(index >> 8) & 255}.${(index & 255) ^ replica}`;

export function rawCatalog(count: number): object[] {
  const objects: object[] = [];
  for (let index = 0; index < count; index++) {
    const name = `svc-${index}`;
    objects.push(
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name, namespace: "bench" },
        spec: { clusterIP: clusterIp(index), ports: [{ name: "http", port: 80, targetPort: 8080 }] },
      },
      {
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        metadata: { name: `${name}-abc`, namespace: "bench", labels: { "kubernetes.io/service-name": name } },
        addressType: "IPv4",
        endpoints: [0, 1, 2].map((replica) => ({ addresses: [endpointIp(index, replica)], nodeName: `edge-${replica}`, conditions: { ready: true } })),
        ports: [{ name: "http", port: 8080, protocol: "TCP" }],
      },
    );
  }
  return objects;
}

/** The catalog as YAML manifests in `files` files, as an operator's directory would hold it. */
export function writeManifests(directory: string, count: number, files = 20): void {
  const objects = rawCatalog(count);
  for (let file = 0; file < files; file++) {
    writeManifest(directory, `part-${file}.yaml`, objects.slice(Math.floor((file * objects.length) / files), Math.floor(((file + 1) * objects.length) / files)));
  }
}

/** The same catalog as normalised objects. */
export function normalisedCatalog(count: number): [string, Service | EndpointSlice][] {
  const entries: [string, Service | EndpointSlice][] = [];
  for (let index = 0; index < count; index++) {
    const name = `svc-${index}`;
    const service: Service = {
      kind: "Service", namespace: "bench", name, type: "ClusterIP", headless: false, clusterIPs: [clusterIp(index)], ipFamilies: ["IPv4"],
      ports: [{ name: "http", protocol: "TCP", port: 80, targetPort: 8080 }], sessionAffinity: "None", sessionAffinityTimeoutSeconds: 10800, publishNotReadyAddresses: false, labels: {}, annotations: {},
    };
    const slice: EndpointSlice = {
      kind: "EndpointSlice", namespace: "bench", name: `${name}-abc`, serviceName: name, addressType: "IPv4",
      endpoints: [0, 1, 2].map((replica) => ({ addresses: [endpointIp(index, replica)], nodeName: `edge-${replica}`, conditions: { ready: true, serving: true, terminating: false } })),
      ports: [{ name: "http", protocol: "TCP", port: 8080 }], labels: { "kubernetes.io/service-name": name }, annotations: {},
    };
    entries.push([catalogKey(service), service], [catalogKey(slice), slice]);
  }
  return entries;
}

/** The DNS name and cluster IP of service `index`, for probing an agent's DNS. */
export function serviceName(index: number): { name: string; ip: string } {
  return { name: `svc-${index}.bench.svc.cluster.local`, ip: clusterIp(index) };
}
