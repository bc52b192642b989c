import { describe, expect, it } from "vitest";
import { selfSignedCertificate, tlsSecretManifest } from "../../test/support/certificates.ts";
import { normalizeObject } from "./normalize.ts";
import { durationMs } from "./normalize-ingress.ts";

const meta = { name: "edge", namespace: "shop" };
const istioGateway = (spec: object) => ({ apiVersion: "networking.istio.io/v1beta1", kind: "Gateway", metadata: meta, spec });
const virtualService = (spec: object) => ({ apiVersion: "networking.istio.io/v1beta1", kind: "VirtualService", metadata: { name: "web", namespace: "shop" }, spec });
const gateway = (spec: object, annotations?: Record<string, string>) => ({ apiVersion: "gateway.networking.k8s.io/v1", kind: "Gateway", metadata: { ...meta, ...(annotations ? { annotations } : {}) }, spec: { gatewayClassName: "leafmesh", ...spec } });
const httpRoute = (spec: object) => ({ apiVersion: "gateway.networking.k8s.io/v1", kind: "HTTPRoute", metadata: { name: "web", namespace: "shop" }, spec });
const tcpRoute = (spec: object) => ({ apiVersion: "gateway.networking.k8s.io/v1alpha2", kind: "TCPRoute", metadata: { name: "db", namespace: "shop" }, spec });
const tlsRoute = (spec: object) => ({ apiVersion: "gateway.networking.k8s.io/v1alpha2", kind: "TLSRoute", metadata: { name: "pass", namespace: "shop" }, spec });
const ok = (raw: unknown) => {
  const result = normalizeObject(raw);
  if (result.status !== "ok") throw new Error(`expected ok, got ${JSON.stringify(result)}`);
  return result.object;
};
const fieldsOf = (raw: unknown) => {
  const result = normalizeObject(raw);
  return result.status === "invalid" ? result.problems.map((problem) => problem.field) : [];
};
const messagesOf = (raw: unknown) => {
  const result = normalizeObject(raw);
  return result.status === "invalid" ? result.problems.map((problem) => `${problem.field} ${problem.message}`) : [];
};

describe("Istio Gateway and VirtualService", () => {
  it("normalises a Gateway: protocols, hosts with namespaces, TLS modes, selector", () => {
    const object = ok(
      istioGateway({
        selector: { istio: "ingressgateway" },
        servers: [
          { port: { number: 80, name: "http", protocol: "HTTP" }, hosts: ["*/Shop.Example.com", "./*.wild.example.com"], tls: { httpsRedirect: true } },
          { port: { number: 443, name: "https", protocol: "HTTPS" }, hosts: ["secure.example.com"], tls: { mode: "SIMPLE", credentialName: "secure-cert" } },
          { port: { number: 443, name: "pass", protocol: "TLS" }, hosts: ["pass.example.com"], tls: { mode: "PASSTHROUGH" } },
          { port: { number: 5432, name: "db", protocol: "tcp" }, hosts: ["*"] },
        ],
      }),
    );
    expect(object).toEqual({
      kind: "IstioGateway",
      namespace: "shop",
      name: "edge",
      selector: { istio: "ingressgateway" },
      servers: [
        { port: 80, portName: "http", protocol: "HTTP", hosts: [{ namespace: "*", host: "shop.example.com" }, { namespace: "shop", host: "*.wild.example.com" }], tls: { mode: "PASSTHROUGH", httpsRedirect: true } },
        { port: 443, portName: "https", protocol: "HTTPS", hosts: [{ namespace: "*", host: "secure.example.com" }], tls: { mode: "SIMPLE", credentialName: "secure-cert", httpsRedirect: false } },
        { port: 443, portName: "pass", protocol: "TLS", hosts: [{ namespace: "*", host: "pass.example.com" }], tls: { mode: "PASSTHROUGH", httpsRedirect: false } },
        { port: 5432, portName: "db", protocol: "TCP", hosts: [{ namespace: "*", host: "*" }] },
      ],
      labels: {},
      annotations: {},
    });
  });

  it("normalises a VirtualService: matches, weights, destinations as Services, timeouts and retries", () => {
    const object = ok(
      virtualService({
        hosts: ["shop.example.com"],
        gateways: ["edge", "other/edge", "mesh"],
        http: [
          {
            name: "canary",
            match: [{ uri: { prefix: "/api/" }, headers: { "X-Canary": { exact: "yes" } }, method: { exact: "get" } }, { uri: { regex: "/items/[0-9]+" }, port: 80 }],
            route: [
              { destination: { host: "web-v1", port: { number: 80 } }, weight: 90 },
              { destination: { host: "web-v2.shop.svc.cluster.local" }, weight: 10 },
            ],
            timeout: "1.5s",
            retries: { attempts: 3, perTryTimeout: "500ms", retryOn: "5xx,connect-failure" },
          },
          { route: [{ destination: { host: "web.other" } }] },
        ],
        tls: [{ match: [{ sniHosts: ["pass.example.com"], port: 443 }], route: [{ destination: { host: "tls-backend", port: { number: 8443 } } }] }],
        tcp: [{ match: [{ port: 5432 }], route: [{ destination: { host: "db" } }] }],
      }),
    );
    expect(object).toMatchObject({
      kind: "VirtualService",
      hosts: ["shop.example.com"],
      gateways: ["shop/edge", "other/edge"],
      http: [
        {
          name: "canary",
          matches: [
            { path: { type: "Prefix", value: "/api/" }, headers: [{ name: "x-canary", type: "Exact", value: "yes" }], method: "GET" },
            { path: { type: "RegularExpression", value: "/items/[0-9]+" }, headers: [], port: 80 },
          ],
          backends: [
            { namespace: "shop", service: "web-v1", port: 80, weight: 90 },
            { namespace: "shop", service: "web-v2", weight: 10 },
          ],
          timeoutMs: 1_500,
          retry: { attempts: 3, perTryTimeoutMs: 500, on: ["5xx", "connect-failure"] },
        },
        // One destination takes everything, whatever its weight.
        { name: "", matches: [], backends: [{ namespace: "other", service: "web", weight: 100 }] },
      ],
      tls: [{ matches: [{ sniHosts: ["pass.example.com"], port: 443 }], backends: [{ namespace: "shop", service: "tls-backend", port: 8443, weight: 100 }] }],
      tcp: [{ matches: [{ port: 5432 }], backends: [{ namespace: "shop", service: "db", weight: 100 }] }],
    });
  });

  it.each([
    ["an unsupported protocol", istioGateway({ servers: [{ port: { number: 27017, protocol: "MONGO" }, hosts: ["*"] }] }), "spec.servers[0].port.protocol"],
    ["HTTPS without tls", istioGateway({ servers: [{ port: { number: 443, protocol: "HTTPS" }, hosts: ["*"] }] }), "spec.servers[0].tls"],
    ["SIMPLE without a credentialName", istioGateway({ servers: [{ port: { number: 443, protocol: "HTTPS" }, hosts: ["*"], tls: { mode: "SIMPLE" } }] }), "spec.servers[0].tls.credentialName"],
    ["mutual TLS", istioGateway({ servers: [{ port: { number: 443, protocol: "HTTPS" }, hosts: ["*"], tls: { mode: "MUTUAL", credentialName: "c" } }] }), "spec.servers[0].tls.mode"],
    ["certificate files", istioGateway({ servers: [{ port: { number: 443, protocol: "HTTPS" }, hosts: ["*"], tls: { mode: "SIMPLE", serverCertificate: "/etc/cert.pem", credentialName: "c" } }] }), "spec.servers[0].tls.serverCertificate"],
    ["a bad host", istioGateway({ servers: [{ port: { number: 80, protocol: "HTTP" }, hosts: ["shop_example.com"] }] }), "spec.servers[0].hosts[0]"],
    ["one port as HTTP and TCP", istioGateway({ servers: [{ port: { number: 80, protocol: "HTTP" }, hosts: ["*"] }, { port: { number: 80, protocol: "TCP" }, hosts: ["*"] }] }), "spec.servers[1].port.number"],
    ["no servers", istioGateway({ servers: [] }), "spec.servers"],
    ["a VirtualService without hosts", virtualService({ http: [] }), "spec.hosts"],
    ["a rewrite", virtualService({ hosts: ["a.example.com"], http: [{ rewrite: { uri: "/" }, route: [{ destination: { host: "web" } }] }] }), "spec.http[0].rewrite"],
    ["a subset", virtualService({ hosts: ["a.example.com"], http: [{ route: [{ destination: { host: "web", subset: "v1" } }] }] }), "spec.http[0].route[0].destination.subset"],
    ["a host outside the cluster", virtualService({ hosts: ["a.example.com"], http: [{ route: [{ destination: { host: "api.example.com" } }] }] }), "spec.http[0].route[0].destination.host"],
    ["a match with two kinds", virtualService({ hosts: ["a.example.com"], http: [{ match: [{ uri: { exact: "/", prefix: "/" } }], route: [{ destination: { host: "web" } }] }] }), "spec.http[0].match[0].uri"],
    ["weights of 0", virtualService({ hosts: ["a.example.com"], http: [{ route: [{ destination: { host: "a" } }, { destination: { host: "b" } }] }] }), "spec.http[0].route"],
    ["a bad timeout", virtualService({ hosts: ["a.example.com"], http: [{ timeout: "soon", route: [{ destination: { host: "web" } }] }] }), "spec.http[0].timeout"],
    ["an unknown retry condition", virtualService({ hosts: ["a.example.com"], http: [{ retries: { attempts: 2, retryOn: "sometimes" }, route: [{ destination: { host: "web" } }] }] }), "spec.http[0].retries.retryOn"],
    ["a TLS route without SNI hosts", virtualService({ hosts: ["a.example.com"], tls: [{ match: [{ sniHosts: [] }], route: [{ destination: { host: "web" } }] }] }), "spec.tls[0].match[0].sniHosts"],
    ["a bad gateway reference", virtualService({ hosts: ["a.example.com"], gateways: ["a/b/c/Edge"] }), "spec.gateways[0]"],
  ])("refuses %s, naming the field", (_what, raw, field) => {
    expect(fieldsOf(raw)).toContain(field);
    for (const message of messagesOf(raw)) expect(message.length).toBeGreaterThan(field.length + 5);
  });
});

describe("Gateway API Gateway and routes", () => {
  it("normalises a Gateway with the API's defaults", () => {
    const object = ok(
      gateway(
        {
          listeners: [
            { name: "http", port: 80, protocol: "HTTP", hostname: "*.Example.com", allowedRoutes: { namespaces: { from: "All" } } },
            { name: "https", port: 443, protocol: "HTTPS", hostname: "secure.example.com", tls: { certificateRefs: [{ name: "secure-cert" }] } },
            { name: "pass", port: 443, protocol: "TLS", hostname: "pass.example.com", tls: { mode: "Passthrough" } },
            { name: "db", port: 5432, protocol: "TCP", hostname: "ignored.example.com" },
          ],
        },
        { "gateway.leafmesh.io/node-selector": "site=shop-7" },
      ),
    );
    expect(object).toEqual({
      kind: "Gateway",
      namespace: "shop",
      name: "edge",
      gatewayClassName: "leafmesh",
      listeners: [
        { name: "http", hostname: "*.example.com", port: 80, protocol: "HTTP", allowedNamespaces: "All" },
        { name: "https", hostname: "secure.example.com", port: 443, protocol: "HTTPS", tls: { mode: "Terminate", certificateRefs: [{ namespace: "shop", name: "secure-cert" }] }, allowedNamespaces: "Same" },
        { name: "pass", hostname: "pass.example.com", port: 443, protocol: "TLS", tls: { mode: "Passthrough", certificateRefs: [] }, allowedNamespaces: "Same" },
        { name: "db", port: 5432, protocol: "TCP", allowedNamespaces: "Same" },
      ],
      labels: {},
      annotations: { "gateway.leafmesh.io/node-selector": "site=shop-7" },
    });
  });

  it("normalises an HTTPRoute: default match, weights, timeouts, retries, parents", () => {
    const object = ok(
      httpRoute({
        parentRefs: [{ name: "edge", sectionName: "http" }, { group: "", kind: "Service", name: "mesh-web" }],
        hostnames: ["Shop.Example.com"],
        rules: [
          {
            matches: [{ path: { type: "Exact", value: "/exact" } }, { path: { type: "RegularExpression", value: "/items/[0-9]+" }, headers: [{ name: "X-Canary", value: "yes" }], method: "GET" }],
            backendRefs: [{ name: "web-v1", port: 80, weight: 90 }, { name: "web-v2", port: 80, weight: 10 }],
            timeouts: { request: "2s", backendRequest: "500ms" },
            retry: { attempts: 3, codes: [503] },
          },
          { backendRefs: [{ name: "web", port: 80 }] },
        ],
      }),
    );
    expect(object).toEqual({
      kind: "HTTPRoute",
      namespace: "shop",
      name: "web",
      parentRefs: [{ namespace: "shop", name: "edge", sectionName: "http" }],
      hostnames: ["shop.example.com"],
      rules: [
        {
          name: "",
          matches: [
            { path: { type: "Exact", value: "/exact" }, headers: [] },
            { path: { type: "RegularExpression", value: "/items/[0-9]+" }, headers: [{ name: "x-canary", type: "Exact", value: "yes" }], method: "GET" },
          ],
          backends: [
            { namespace: "shop", service: "web-v1", port: 80, weight: 90 },
            { namespace: "shop", service: "web-v2", port: 80, weight: 10 },
          ],
          timeoutMs: 2_000,
          retry: { attempts: 3, perTryTimeoutMs: 500, on: ["503"] },
        },
        { name: "", matches: [{ path: { type: "PathPrefix", value: "/" }, headers: [] }], backends: [{ namespace: "shop", service: "web", port: 80, weight: 1 }] },
      ],
      labels: {},
      annotations: {},
    });
  });

  it("normalises TCPRoute and TLSRoute", () => {
    expect(ok(tcpRoute({ parentRefs: [{ name: "edge", sectionName: "db" }], rules: [{ backendRefs: [{ name: "db", port: 5432 }] }] }))).toMatchObject({
      kind: "TCPRoute",
      parentRefs: [{ namespace: "shop", name: "edge", sectionName: "db" }],
      rules: [{ backends: [{ namespace: "shop", service: "db", port: 5432, weight: 1 }] }],
    });
    expect(ok(tlsRoute({ parentRefs: [{ name: "edge" }], hostnames: ["pass.example.com"], rules: [{ backendRefs: [{ name: "tls-backend", port: 8443 }] }] }))).toMatchObject({
      kind: "TLSRoute",
      hostnames: ["pass.example.com"],
      rules: [{ backends: [{ service: "tls-backend", port: 8443, weight: 1 }] }],
    });
  });

  it.each([
    ["UDP", gateway({ listeners: [{ name: "dns", port: 53, protocol: "UDP" }] }), "spec.listeners[0].protocol"],
    ["HTTPS without certificates", gateway({ listeners: [{ name: "https", port: 443, protocol: "HTTPS", tls: {} }] }), "spec.listeners[0].tls.certificateRefs"],
    ["HTTPS passed through", gateway({ listeners: [{ name: "https", port: 443, protocol: "HTTPS", tls: { mode: "Passthrough" } }] }), "spec.listeners[0].tls.mode"],
    ["a certificate in another namespace", gateway({ listeners: [{ name: "https", port: 443, protocol: "HTTPS", tls: { certificateRefs: [{ name: "c", namespace: "other" }] } }] }), "spec.listeners[0].tls.certificateRefs[0].namespace"],
    ["a namespace selector", gateway({ listeners: [{ name: "http", port: 80, protocol: "HTTP", allowedRoutes: { namespaces: { from: "Selector" } } }] }), "spec.listeners[0].allowedRoutes.namespaces.from"],
    ["two listeners with one name", gateway({ listeners: [{ name: "a", port: 80, protocol: "HTTP" }, { name: "a", port: 81, protocol: "HTTP" }] }), "spec.listeners[1].name"],
    ["one port as HTTP and TCP", gateway({ listeners: [{ name: "a", port: 80, protocol: "HTTP" }, { name: "b", port: 80, protocol: "TCP" }] }), "spec.listeners[1].port"],
    ["a bad node selector", gateway({ listeners: [{ name: "a", port: 80, protocol: "HTTP" }] }, { "gateway.leafmesh.io/node-selector": "site" }), 'metadata.annotations["gateway.leafmesh.io/node-selector"]'],
    ["no class", { ...gateway({ listeners: [{ name: "a", port: 80, protocol: "HTTP" }] }), spec: { listeners: [{ name: "a", port: 80, protocol: "HTTP" }] } }, "spec.gatewayClassName"],
    ["a filter", httpRoute({ rules: [{ filters: [{ type: "URLRewrite" }], backendRefs: [{ name: "web", port: 80 }] }] }), "spec.rules[0].filters"],
    ["a query parameter match", httpRoute({ rules: [{ matches: [{ queryParams: [{ name: "a", value: "b" }] }], backendRefs: [{ name: "web", port: 80 }] }] }), "spec.rules[0].matches[0].queryParams"],
    ["a backend without a port", httpRoute({ rules: [{ backendRefs: [{ name: "web" }] }] }), "spec.rules[0].backendRefs[0].port"],
    ["a backend in another namespace", httpRoute({ rules: [{ backendRefs: [{ name: "web", namespace: "other", port: 80 }] }] }), "spec.rules[0].backendRefs[0].namespace"],
    ["a path without a slash", httpRoute({ rules: [{ matches: [{ path: { type: "PathPrefix", value: "api" } }], backendRefs: [{ name: "web", port: 80 }] }] }), "spec.rules[0].matches[0].path.value"],
    ["an unknown path type", httpRoute({ rules: [{ matches: [{ path: { type: "Glob", value: "/a*" } }] }] }), "spec.rules[0].matches[0].path.type"],
    ["a bad method", httpRoute({ rules: [{ matches: [{ method: "FETCH" }] }] }), "spec.rules[0].matches[0].method"],
    ["a bad timeout", httpRoute({ rules: [{ timeouts: { request: "10 seconds" }, backendRefs: [{ name: "web", port: 80 }] }] }), "spec.rules[0].timeouts.request"],
    ["a retry code out of range", httpRoute({ rules: [{ retry: { codes: [200] }, backendRefs: [{ name: "web", port: 80 }] }] }), "spec.rules[0].retry.codes[0]"],
    ["a bad hostname", httpRoute({ hostnames: ["shop..example.com"] }), "spec.hostnames[0]"],
    ["a TCPRoute without rules", tcpRoute({ rules: [] }), "spec.rules"],
    ["a TCPRoute at v1", { ...tcpRoute({ rules: [{ backendRefs: [{ name: "db", port: 1 }] }] }), apiVersion: "gateway.networking.k8s.io/v1" }, "apiVersion"],
    ["a Gateway of neither API", { apiVersion: "example.com/v1", kind: "Gateway", metadata: meta, spec: {} }, "apiVersion"],
  ])("refuses %s, naming the field", (_what, raw, field) => {
    expect(fieldsOf(raw)).toContain(field);
  });

  it("ignores Gateway API kinds the gateway does not serve", () => {
    expect(normalizeObject({ apiVersion: "gateway.networking.k8s.io/v1", kind: "GatewayClass", metadata: { name: "leafmesh" } }).status).toBe("ignored");
    expect(normalizeObject({ apiVersion: "gateway.networking.k8s.io/v1", kind: "GRPCRoute", metadata: { name: "g" } }).status).toBe("ignored");
  });
});

describe("TLS Secrets", () => {
  const pair = selfSignedCertificate(["secure.example.com"]);
  const other = selfSignedCertificate(["other.example.com"]);

  it("holds a kubernetes.io/tls Secret's certificate and key, from data or stringData", () => {
    expect(ok(tlsSecretManifest({ name: "secure-cert", namespace: "shop" }, pair))).toEqual({
      kind: "TLSSecret",
      namespace: "shop",
      name: "secure-cert",
      certificate: pair.cert,
      privateKey: pair.key,
      labels: {},
      annotations: {},
    });
    const fromStrings = ok({ apiVersion: "v1", kind: "Secret", type: "kubernetes.io/tls", metadata: { name: "s", namespace: "shop" }, stringData: { "tls.crt": pair.cert, "tls.key": pair.key } });
    expect(fromStrings).toMatchObject({ kind: "TLSSecret", certificate: pair.cert });
  });

  it("ignores Secrets of other types: leafmesh has no use for them and does not hold them", () => {
    expect(normalizeObject({ apiVersion: "v1", kind: "Secret", type: "Opaque", metadata: { name: "db-password" }, data: { password: "c2VjcmV0" } })).toEqual({ status: "ignored", kind: "Secret" });
    expect(normalizeObject({ apiVersion: "v1", kind: "Secret", metadata: { name: "untyped" } }).status).toBe("ignored");
  });

  it.each([
    ["a missing key", { ...tlsSecretManifest(meta, pair), data: { "tls.crt": Buffer.from(pair.cert).toString("base64") } }, 'data["tls.key"]'],
    ["a key of another certificate", tlsSecretManifest(meta, { cert: pair.cert, key: other.key }), 'data["tls.key"]'],
    ["a certificate that is not PEM", tlsSecretManifest(meta, { cert: "hello", key: pair.key }), 'data["tls.crt"]'],
    ["data that is not base64", { ...tlsSecretManifest(meta, pair), data: { "tls.crt": "%%%", "tls.key": "%%%" } }, 'data["tls.crt"]'],
  ])("refuses %s, naming the field", (_what, raw, field) => {
    expect(fieldsOf(raw)).toContain(field);
  });
});

describe("durations", () => {
  it.each([
    ["10s", 10_000],
    ["1.5s", 1_500],
    ["250ms", 250],
    ["1m30s", 90_000],
    ["1h", 3_600_000],
    ["0s", 0],
  ])("reads %s", (text, ms) => expect(durationMs(text)).toBe(ms));

  it.each(["", "10", "s", "1 s", "-1s", "1d", "1.s"])("refuses %j", (text) => expect(durationMs(text)).toBeUndefined());
});
