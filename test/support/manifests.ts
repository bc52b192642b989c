/** Manifest files for tests: real Kubernetes YAML, as a user would write it. */
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";

export interface SampleServiceOptions {
  namespace?: string;
  name: string;
  clusterIP: string;
  port?: number;
  /** The port the endpoints listen on (the Service's targetPort and the slice's port). @default 8080 */
  backendPort?: number;
  /** An endpoint without a node is an address outside the mesh (dialled directly). */
  endpoints?: { ip: string; node?: string; ready?: boolean }[];
  /** The Service's annotations (e.g. leafmesh.io/partition). */
  annotations?: Record<string, string>;
}

/** A Service and its EndpointSlice as raw Kubernetes objects. */
export function sampleService(options: SampleServiceOptions): object[] {
  const namespace = options.namespace ?? "demo";
  const port = options.port ?? 80;
  const backendPort = options.backendPort ?? 8080;
  return [
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: options.name, namespace, labels: { app: options.name }, ...(options.annotations ? { annotations: options.annotations } : {}) },
      spec: { clusterIP: options.clusterIP, ports: [{ name: "http", port, targetPort: backendPort, protocol: "TCP" }] },
    },
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: `${options.name}-abc`, namespace, labels: { "kubernetes.io/service-name": options.name } },
      addressType: "IPv4",
      endpoints: (options.endpoints ?? [{ ip: "198.18.10.1", node: "edge-a" }]).map((endpoint) => ({
        addresses: [endpoint.ip],
        nodeName: endpoint.node,
        conditions: { ready: endpoint.ready ?? true },
      })),
      ports: [{ name: "http", port: backendPort, protocol: "TCP" }],
    },
  ];
}

export function writeManifest(directory: string, file: string, objects: object[]): void {
  mkdirSync(directory, { recursive: true });
  writeFileSync(join(directory, file), objects.map((object) => stringify(object)).join("---\n"));
}

/** `count` services named svc-0..svc-N in one file, cluster IPs from 198.19.0.0/16. */
export function manyServices(count: number, prefix = "svc"): object[] {
  return Array.from({ length: count }, (_, index) =>
    sampleService({ name: `${prefix}-${index}`, clusterIP: `198.19.${Math.floor(index / 250)}.${(index % 250) + 1}`, endpoints: [{ ip: `198.18.${Math.floor(index / 250) + 100}.${(index % 250) + 1}`, node: `edge-${index % 3}` }] }),
  ).flat();
}

/** A fresh mesh pre-shared key in swarm.key format, written 0600; returns its path. */
export function writePsk(directory: string): string {
  const path = join(directory, "swarm.key");
  writeFileSync(path, `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString("hex")}\n`, { mode: 0o600 });
  return path;
}
