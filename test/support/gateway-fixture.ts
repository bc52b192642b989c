/**
 * The catalog of a gateway in front of test backends, as the backend-* tests of services/gateway/ build it: one
 * Istio Gateway on one port for every host, a Service per backend (port 80, its endpoints' addresses and port), and
 * one VirtualService routing the path prefix `/<name>/` to each, with the rule's extras (retries, a timeout).
 *
 * ```ts
 * const feed = catalogFeed(prefixRoutes(gatewayPort, [{ name: "orders", portName: "grpc", port: 21000 }], "198.19.83"));
 * ```
 */
import { request as httpRequest } from "node:http";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey } from "../../bus/catalog.ts";
import { normalizeObject } from "../../services/controller/normalize.ts";

export interface PrefixBackend {
  name: string;
  /** The Service port's name (`grpc`, `grpc-api`: HTTP/2; `http`: HTTP/1.1). */
  portName: string;
  port: number;
  /** @default ["127.0.0.1"] */
  addresses?: string[];
  /** Extras of the route's rule (Istio HTTPRoute fields: `retries`, `timeout`). */
  rule?: object;
}

/** Raw manifests, as a user writes them: the Gateway, a Service and EndpointSlice per backend (cluster IPs `<subnet>.10`, `.11`, …), the VirtualService. */
export function prefixRoutes(gatewayPort: number, backends: PrefixBackend[], subnet: string, namespace = "shop"): object[] {
  const objects: object[] = [{ apiVersion: "networking.istio.io/v1beta1", kind: "Gateway", metadata: { name: "edge", namespace }, spec: { selector: {}, servers: [{ port: { number: gatewayPort, name: "http", protocol: "HTTP" }, hosts: ["*"] }] } }];
  const http: object[] = [];
  for (const [index, { name, portName, port, addresses = ["127.0.0.1"], rule = {} }] of backends.entries()) {
    objects.push(
      { apiVersion: "v1", kind: "Service", metadata: { name, namespace }, spec: { clusterIP: `${subnet}.${10 + index}`, ports: [{ port: 80, protocol: "TCP", name: portName }] } },
      { apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice", metadata: { name: `${name}-0`, namespace, labels: { "kubernetes.io/service-name": name } }, addressType: "IPv4", endpoints: addresses.map((address) => ({ addresses: [address], conditions: { ready: true } })), ports: [{ name: portName, port, protocol: "TCP" }] },
    );
    http.push({ match: [{ uri: { prefix: `/${name}/` } }], ...rule, route: [{ destination: { host: name, port: { number: 80 } } }] });
  }
  objects.push({ apiVersion: "networking.istio.io/v1beta1", kind: "VirtualService", metadata: { name: "routes", namespace }, spec: { gateways: ["edge"], hosts: ["*"], http } });
  return objects;
}

/** A catalog feed holding the objects, normalized as the controller normalizes them; throws on one it refuses (a broken fixture). */
export function catalogFeed(objects: object[]): IndexFeed {
  const feed = new IndexFeed();
  for (const object of objects) {
    const result = normalizeObject(object);
    if (result.status !== "ok") throw new Error(`fixture object refused: ${JSON.stringify(result)}`);
    feed.reader.apply({ op: "put", key: catalogKey(result.object), object: result.object });
  }
  return feed;
}

/** A GET of `/` on the gateway's HTTP port with this Host, on a connection of its own: its status and body. */
export function getWithHost(port: number, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: "127.0.0.1", port, path: "/", headers: { host }, agent: false }, (response) => {
      let body = "";
      response.on("data", (chunk: Buffer) => (body += chunk.toString()));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
    });
    request.on("error", reject);
    request.end();
  });
}
