/**
 * Both catalog sources (manifest files, the Kubernetes API) read the ingress
 * kinds alike: Istio's Gateway and VirtualServices, the Gateway API's Gateway
 * and routes, and TLS Secrets (only of type kubernetes.io/tls; from the API,
 * only those come over: a field selector); an invalid route is refused with its
 * object and field and the rest stays.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { catalogKey, type CatalogObject } from "../../bus/catalog.ts";
import { silentLogger } from "../../lib/log.ts";
import { certificateSecrets, ingressManifests } from "../../test/support/gateway-manifests.ts";
import { FakeKubeApi } from "../../test/support/fake-kube-api.ts";
import { writeManifest } from "../../test/support/manifests.ts";
import { eventually } from "../../test/support/ports.ts";
import { stopAllProcesses, tempDir } from "../../test/support/processes.ts";
import { KubernetesSource } from "./kubernetes-source.ts";
import { ManifestSource } from "./manifest-source.ts";
import { formatRejection, type CatalogRejection, type CatalogSource } from "./source.ts";

const ports = { http: 8080, https: 8443, tls: 9443, tcp: 9000 };
const everything = [...ingressManifests("istio", { ports }), ...ingressManifests("gateway-api", { ports }), ...certificateSecrets()];
const opaque = { apiVersion: "v1", kind: "Secret", type: "Opaque", metadata: { name: "db-password", namespace: "shop" }, data: { password: "c2VjcmV0" } };
const badRoute = {
  apiVersion: "gateway.networking.k8s.io/v1",
  kind: "HTTPRoute",
  metadata: { name: "rewrite", namespace: "shop" },
  spec: { parentRefs: [{ name: "edge" }], rules: [{ filters: [{ type: "URLRewrite" }], backendRefs: [{ name: "web-v1", port: 80 }] }] },
};

const expectedKeys = [
  "gw.shop.edge", "httproute.shop.grpc", "httproute.shop.live", "httproute.shop.retry", "httproute.shop.secure", "httproute.shop.shop", "httproute.shop.slow", "httproute.shop.wild",
  "igw.shop.edge", "tcproute.shop.tcp", "tls.shop.secure-cert", "tls.shop.term-cert", "tlsroute.shop.pass", "tlsroute.shop.term",
  "vs.shop.grpc", "vs.shop.live", "vs.shop.pass", "vs.shop.retry", "vs.shop.secure", "vs.shop.shop", "vs.shop.slow", "vs.shop.tcp", "vs.shop.term", "vs.shop.wild",
];

const started: CatalogSource[] = [];
const apis: FakeKubeApi[] = [];
const directory = tempDir();
afterEach(async () => {
  await Promise.all(started.splice(0).map((source) => source.stop()));
  await Promise.all(apis.splice(0).map((api) => api.close()));
});
afterAll(async () => {
  await stopAllProcesses();
  rmSync(directory, { recursive: true, force: true });
});

interface Harness {
  source: CatalogSource;
  rejections: CatalogRejection[];
  /** Adds or replaces one object through the source's input. */
  put(raw: object): Promise<void>;
  api?: FakeKubeApi;
}

const harnesses: [string, (objects: object[]) => Promise<Harness>][] = [
  [
    "manifest files",
    async (objects) => {
      const dir = join(directory, `m${started.length}-${Date.now()}`);
      writeManifest(dir, "ingress.yaml", objects);
      const source = new ManifestSource({ path: dir, log: silentLogger(), rescanMs: 200, debounceMs: 20 });
      const rejections: CatalogRejection[] = [];
      source.onReject((rejection) => rejections.push(rejection));
      started.push(source);
      await source.start();
      let file = 0;
      return { source, rejections, put: async (raw) => writeManifest(dir, `extra-${++file}.yaml`, [raw]) };
    },
  ],
  [
    "the Kubernetes API",
    async (objects) => {
      const api = await FakeKubeApi.start({ istioGateways: true, gatewayApi: true, secrets: true });
      apis.push(api);
      for (const object of objects) api.apply(object);
      const source = new KubernetesSource({ kubeconfig: api.writeKubeconfig(directory, `kubeconfig-${api.port}`), log: silentLogger(), retryInitialMs: 50, retryMaxMs: 200 });
      const rejections: CatalogRejection[] = [];
      source.onReject((rejection) => rejections.push(rejection));
      started.push(source);
      await source.start();
      return { source, rejections, put: async (raw) => void api.apply(raw), api };
    },
  ],
];

describe.each(harnesses)("the ingress kinds from %s", (_name, make) => {
  it("reads both configurations and the TLS Secrets they name, and no other Secret", async () => {
    const { source, api } = await make([...everything, opaque]);
    await eventually(() => source.synced, 10_000, "the source to sync");
    expect([...source.snapshot().keys()].sort()).toEqual(expectedKeys);
    const secret = source.snapshot().get("tls.shop.secure-cert") as Extract<CatalogObject, { kind: "TLSSecret" }>;
    expect(secret.privateKey).toMatch(/BEGIN PRIVATE KEY/);
    // Istio's Gateway and the Gateway API's, both called shop/edge, are two objects.
    expect(source.snapshot().get("igw.shop.edge")?.kind).toBe("IstioGateway");
    expect(source.snapshot().get("gw.shop.edge")?.kind).toBe("Gateway");
    if (api) {
      // Only TLS Secrets were asked for, on the list and on the watch.
      const secretRequests = api.requests.filter((request) => request.resource === "secrets");
      expect(secretRequests.length).toBeGreaterThanOrEqual(2);
      for (const request of secretRequests) expect(request.fieldSelector).toBe("type=kubernetes.io/tls");
      expect(api.requests.filter((request) => request.resource === "gateways").map((request) => request.group).sort()).toEqual(expect.arrayContaining(["gateway.networking.k8s.io", "networking.istio.io"]));
    }
  });

  it("refuses an invalid route with its object and field, and keeps the rest", async () => {
    const { source, rejections, put } = await make(everything);
    await eventually(() => source.synced, 10_000, "the source to sync");
    await put(badRoute);
    const rejection = await eventually(() => rejections.find((entry) => entry.object === "HTTPRoute shop/rewrite"), 10_000, "the rejection");
    expect(rejection.field).toBe("spec.rules[0].filters");
    expect(formatRejection(rejection)).toMatch(/not supported by the leafmesh gateway \(filters\)/);
    expect([...source.snapshot().keys()].sort()).toEqual(expectedKeys);
    expect(source.snapshot().has(catalogKey({ kind: "HTTPRoute", namespace: "shop", name: "rewrite" }))).toBe(false);
  });
});

describe("the Kubernetes API without the ingress APIs", () => {
  it("goes on without Secrets when the account may not read them (403), and without the CRDs when they are not installed", async () => {
    const api = await FakeKubeApi.start({ secrets: true });
    apis.push(api);
    api.apply({ apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: "shop" }, spec: { clusterIP: "198.19.0.1", ports: [{ port: 80 }] } });
    api.failWith(403, "secrets");
    const source = new KubernetesSource({ kubeconfig: api.writeKubeconfig(directory, `kubeconfig-${api.port}`), log: silentLogger(), retryInitialMs: 50, retryMaxMs: 200 });
    started.push(source);
    await source.start();
    expect(source.synced).toBe(true);
    expect([...source.snapshot().keys()]).toEqual(["svc.shop.web"]);
    const byResource = (resource: string, group: string) => source.status().find((entry) => entry.resource === resource && entry.group === group);
    expect(byResource("secrets", "")).toMatchObject({ synced: true, objects: 0 });
    expect(byResource("secrets", "")?.lastError).toMatch(/forbidden/);
    expect(byResource("httproutes", "gateway.networking.k8s.io")).toMatchObject({ state: "absent", synced: true });
    expect(byResource("gateways", "networking.istio.io")).toMatchObject({ state: "absent", synced: true });
  });
});
