/**
 * Normalised catalog objects for traffic and proxier tests, the lab and the
 * benchmark: a Service with one or more ports and its EndpointSlice, filled
 * straight into an IndexFeed (the real index the controller would fill).
 */
import type { EndpointSlice, Service } from "../../bus/catalog.ts";
import { catalogKey } from "../../bus/catalog.ts";
import type { IndexFeed } from "../../bus/catalog-feed.ts";
import { connect } from "node:net";

export interface TestServiceOptions {
  namespace?: string;
  name: string;
  clusterIP: string;
  /** @default [{ name: "main", protocol: "TCP", port: 80, targetPort: 8080 }] */
  ports?: { name: string; protocol: "TCP" | "UDP"; port: number; targetPort: number }[];
  endpoints?: { ip: string; node?: string; ready?: boolean }[];
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  affinityTimeoutSeconds?: number;
}

export function testService(options: TestServiceOptions): { service: Service; slice: EndpointSlice } {
  const namespace = options.namespace ?? "lab";
  const ports = options.ports ?? [{ name: "main", protocol: "TCP" as const, port: 80, targetPort: 8080 }];
  const service: Service = {
    kind: "Service",
    namespace,
    name: options.name,
    type: "ClusterIP",
    headless: false,
    clusterIPs: [options.clusterIP],
    ipFamilies: ["IPv4"],
    ports: ports.map((port) => ({ name: port.name, protocol: port.protocol, port: port.port, targetPort: port.targetPort })),
    sessionAffinity: options.affinityTimeoutSeconds ? "ClientIP" : "None",
    sessionAffinityTimeoutSeconds: options.affinityTimeoutSeconds ?? 10_800,
    publishNotReadyAddresses: false,
    labels: options.labels ?? {},
    annotations: options.annotations ?? {},
  };
  const slice: EndpointSlice = {
    kind: "EndpointSlice",
    namespace,
    name: `${options.name}-slice`,
    serviceName: options.name,
    addressType: "IPv4",
    endpoints: (options.endpoints ?? []).map((endpoint) => ({
      addresses: [endpoint.ip],
      nodeName: endpoint.node,
      conditions: { ready: endpoint.ready ?? true, serving: endpoint.ready ?? true, terminating: false },
    })),
    ports: ports.map((port) => ({ name: port.name, protocol: port.protocol, port: port.targetPort })),
    labels: { "kubernetes.io/service-name": options.name },
    annotations: {},
  };
  return { service, slice };
}

/** Puts (or replaces) a service and its slice in the feed and notifies its listeners. */
export function putService(feed: IndexFeed, options: TestServiceOptions): void {
  const { service, slice } = testService(options);
  const keys: string[] = [];
  for (const object of [service, slice]) {
    const key = catalogKey(object);
    if (feed.reader.apply({ op: "put", key, object })) keys.push(key);
  }
  feed.notify(keys);
}

export function deleteService(feed: IndexFeed, namespace: string, name: string): void {
  const keys = [catalogKey({ kind: "Service", namespace, name }), catalogKey({ kind: "EndpointSlice", namespace, name: `${name}-slice` })];
  feed.notify(keys.filter((key) => feed.reader.apply({ op: "delete", key })));
}

export type ListenerAddress = { host: string; port: number };

/** Where a binding's listener takes connections: its own address on the shared TCP listener, or 127.0.0.1. */
export function listenerAddress(binding: { listenerHost?: string; listenerPort: number }): ListenerAddress;
export function listenerAddress(binding: { listenerHost?: string; listenerPort: number } | undefined): ListenerAddress | undefined;
export function listenerAddress(binding: { listenerHost?: string; listenerPort: number } | undefined): ListenerAddress | undefined {
  return binding && { host: binding.listenerHost ?? "127.0.0.1", port: binding.listenerPort };
}

/** Connects to the listener (a port of 127.0.0.1, or an address), returns the endpoint's name line, or the error code. */
export function whoAnswers(listener: number | ListenerAddress, localAddress = "127.0.0.1"): Promise<string> {
  const { host, port } = typeof listener === "number" ? { host: "127.0.0.1", port: listener } : listener;
  return new Promise((resolve) => {
    const socket = connect({ host, port, localAddress });
    let text = "";
    socket.on("data", (data) => {
      text += data.toString();
      if (text.includes("\n")) {
        socket.destroy();
        resolve(text.split("\n")[0]);
      }
    });
    socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
    socket.on("close", () => resolve(text || "closed"));
  });
}
