/**
 * The routing decision as a pure function of (catalog, node, request), over
 * the same routes written as Istio and as the Gateway API
 * (test/support/gateway-manifests.ts): both make the same decisions for a
 * table of requests and for hundreds of generated ones; weights are exact;
 * bad routes are refused with their reason and the rest is served; Gateways
 * select nodes by labels or name.
 */
import { describe, expect, it } from "vitest";
import { CatalogIndex } from "../../bus/catalog-index.ts";
import { catalogKey } from "../../bus/catalog.ts";
import { normalizeObject } from "../controller/normalize.ts";
import { backendManifests, backendServices, certificateSecrets, ingressManifests, type IngressStyle } from "../../test/support/gateway-manifests.ts";
import { compileGateway } from "./compile.ts";
import { hostCovers, intersectHosts, requestHost } from "./hosts.ts";
import type { GatewayNode, GatewayPlan, PortPlan } from "./plan.ts";
import { routeHttp, routeSni, WeightedChoice, type RequestView } from "./router.ts";

const ports = { http: 8080, https: 8443, tls: 9443, tcp: 9000 };
const node: GatewayNode = { name: "edge-a", labels: { site: "shop-7" } };
const endpoints = Object.fromEntries(backendServices.map((name, index) => [name, [{ ip: "198.18.9.1", port: 10_000 + index, node: "edge-b" }]]));

function catalogOf(raws: object[]): CatalogIndex {
  const index = new CatalogIndex();
  for (const raw of raws) {
    const result = normalizeObject(raw);
    if (result.status !== "ok") throw new Error(`fixture object refused: ${JSON.stringify(result)}`);
    index.apply({ op: "put", key: catalogKey(result.object), object: result.object });
  }
  return index;
}

function planOf(style: IngressStyle, options: { bad?: boolean; nodeSelector?: Record<string, string>; secrets?: boolean } = {}, forNode = node): GatewayPlan {
  const raws = [...ingressManifests(style, { ports, ...options }), ...backendManifests(endpoints), ...(options.secrets === false ? [] : certificateSecrets())];
  return compileGateway(catalogOf(raws), forNode);
}

function request(host: string, path: string, headers: Record<string, string> = {}, method = "GET"): RequestView {
  const lower = Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
  return { host, path, method, header: (name) => lower[name] };
}

/** What a request gets on a port: the rule's backend services (by weight order) or why none. */
function decide(plan: GatewayPlan, port: number, view: RequestView, sni?: string): string {
  let portPlan: PortPlan | undefined = plan.ports.get(port);
  if (!portPlan) return "closed";
  let hosts;
  if (portPlan.kind === "tls") {
    const entry = routeSni(portPlan.sni, sni);
    if (!entry) return "no server name";
    if (entry.mode === "passthrough") return `passthrough ${entry.route.backends.map((backend) => backend.service).join(",")}`;
    if (entry.inner.kind === "tcp") return `terminate tcp ${entry.inner.route.backends.map((backend) => backend.service).join(",")}`;
    hosts = entry.inner.hosts;
  } else if (portPlan.kind === "tcp") return `tcp ${portPlan.route.backends.map((backend) => backend.service).join(",")}`;
  else hosts = portPlan.hosts;
  const decision = routeHttp(hosts, view);
  if (decision.kind !== "route") return decision.kind;
  const backends = decision.entry.rule.backends;
  const total = backends.reduce((sum, backend) => sum + backend.weight, 0);
  // Shares, not weights: Istio writes 100 for a lone destination, the Gateway API 1.
  return backends.map((backend) => `${backend.service}:${Math.round((backend.weight / total) * 100)}`).join(",");
}

const table: [string, number, RequestView, string | undefined, string][] = [
  ["an exact path", ports.http, request("shop.example.com", "/exact"), undefined, "exact:100"],
  ["an exact path with more", ports.http, request("shop.example.com", "/exact/more"), undefined, "web-v1:90,web-v2:10"],
  ["a prefix", ports.http, request("shop.example.com", "/api/orders"), undefined, "api:100"],
  ["a regex", ports.http, request("shop.example.com", "/items/42"), undefined, "items:100"],
  ["a regex that does not fit all the path", ports.http, request("shop.example.com", "/items/42x"), undefined, "web-v1:90,web-v2:10"],
  ["a header", ports.http, request("shop.example.com", "/", { "X-Canary": "yes" }), undefined, "canary:100"],
  ["a header with another value", ports.http, request("shop.example.com", "/", { "X-Canary": "no" }), undefined, "web-v1:90,web-v2:10"],
  ["the host with a port and upper case", ports.http, request("SHOP.example.com:8080", "/api/x"), undefined, "api:100"],
  ["a wildcard host", ports.http, request("a.b.wild.example.com", "/"), undefined, "wild:100"],
  ["the wildcard's own name", ports.http, request("wild.example.com", "/"), undefined, "no host"],
  ["an unknown host", ports.http, request("nowhere.example.org", "/"), undefined, "no host"],
  ["the retry host", ports.http, request("retry.example.com", "/x"), undefined, "flaky:100"],
  ["terminated HTTPS", ports.https, request("secure.example.com", "/"), "secure.example.com", "secure:100"],
  ["HTTPS with another Host than its SNI", ports.https, request("shop.example.com", "/"), "secure.example.com", "no host"],
  ["HTTPS for an unknown name", ports.https, request("x", "/"), "other.example.com", "no server name"],
  ["TLS passed through", ports.tls, request("", "/"), "pass.example.com", "passthrough tls-pass"],
  ["TLS terminated", ports.tls, request("", "/"), "term.example.com", "terminate tcp echo"],
  ["TLS without SNI", ports.tls, request("", "/"), undefined, "no server name"],
  ["TCP", ports.tcp, request("", "/"), undefined, "tcp echo"],
  ["a port nobody routes", 1234, request("shop.example.com", "/"), undefined, "closed"],
];

describe.each(["istio", "gateway-api"] as const)("routing from the %s configuration", (style) => {
  const plan = planOf(style);

  it.each(table)("%s", (_what, port, view, sni, expected) => {
    expect(decide(plan, port, view, sni)).toBe(expected);
  });

  it("refuses nothing, and lists what it serves", () => {
    expect(plan.refused).toEqual([]);
    expect(plan.routes.map((route) => `${route.port} ${route.kind} ${route.hosts.join(",")}`).sort()).toEqual(
      [
        `${ports.http} http *.wild.example.com`,
        `${ports.http} http grpc.example.com`,
        `${ports.http} http live.example.com`,
        `${ports.http} http retry.example.com`,
        `${ports.http} http shop.example.com`,
        `${ports.http} http slow.example.com`,
        `${ports.https} tls-terminate secure.example.com`,
        `${ports.tcp} tcp `,
        `${ports.tls} tls-passthrough pass.example.com`,
        `${ports.tls} tls-terminate term.example.com`,
      ].sort(),
    );
  });

  it("splits 90/10 exactly, interleaved", () => {
    const decision = routeHttp((plan.ports.get(ports.http) as Extract<PortPlan, { kind: "http" }>).hosts, request("shop.example.com", "/"));
    if (decision.kind !== "route") throw new Error(decision.kind);
    const weights = new WeightedChoice();
    const picks = Array.from({ length: 2_000 }, () => weights.pick(decision.entry.rule.backends)!.service);
    expect(picks.filter((name) => name === "web-v2")).toHaveLength(200);
    // Never two web-v2 in a row: the minority is spread, not bunched.
    expect(picks.some((name, index) => name === "web-v2" && picks[index + 1] === "web-v2")).toBe(false);
  });

  it("refuses the bad routes with their reasons and serves the rest", () => {
    const bad = planOf(style, { bad: true });
    expect(bad.refused.map((refusal) => refusal.reason).sort()).toEqual(["bad regex", "missing secret", "unknown service"]);
    expect(bad.refused.find((refusal) => refusal.reason === "unknown service")).toMatchObject({ object: expect.stringMatching(/shop\/bad-svc$/), error: "Service shop/nope is not in the catalog" });
    expect(bad.refused.find((refusal) => refusal.reason === "bad regex")?.error).toMatch(/'\/items\/\(' is not a regular expression/);
    expect(bad.refused.find((refusal) => refusal.reason === "missing secret")?.error).toMatch(/Secret shop\/missing-cert \(type kubernetes.io\/tls\) is not in the catalog: missing.example.com not served/);
    for (const [, port, view, sni, expected] of table) expect(decide(bad, port, view, sni)).toBe(expected);
    expect(decide(bad, ports.http, request("bad-svc.example.com", "/"), undefined)).toBe("no host");
    expect(decide(bad, ports.https, request("missing.example.com", "/"), "missing.example.com")).toBe("no server name");
  });

  it("without the Secrets, refuses the terminating listeners and serves the rest", () => {
    const plain = planOf(style, { secrets: false });
    expect(plain.refused.map((refusal) => refusal.reason)).toEqual(["missing secret", "missing secret"]);
    expect(decide(plain, ports.http, request("shop.example.com", "/api/x"), undefined)).toBe("api:100");
    expect(decide(plain, ports.tls, request("", "/"), "pass.example.com")).toBe("passthrough tls-pass");
    expect(plain.ports.has(ports.https)).toBe(false);
  });

  it("is this node's only when its selector matches the node's labels or name", () => {
    expect(planOf(style, { nodeSelector: { site: "shop-7" } }).ports.size).toBe(4);
    expect(planOf(style, { nodeSelector: { site: "shop-8" } }).ports.size).toBe(0);
    expect(planOf(style, { nodeSelector: { "kubernetes.io/hostname": "edge-a" } }).ports.size).toBe(4);
    expect(planOf(style, { nodeSelector: { "kubernetes.io/hostname": "edge-b" } }).gateways).toEqual([]);
  });
});

describe("both configurations decide alike", () => {
  const istio = planOf("istio");
  const gatewayApi = planOf("gateway-api");
  let seed = 11;
  const random = () => ((seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff) / 0x7fffffff);
  const pick = <T>(values: readonly T[]) => values[Math.floor(random() * values.length)];
  const hosts = ["shop.example.com", "SHOP.EXAMPLE.COM:8080", "x.wild.example.com", "wild.example.com", "retry.example.com", "slow.example.com", "secure.example.com", "other.org", "", "shop.example.com."];
  const paths = ["/", "/exact", "/exact/", "/exactly", "/api", "/api/", "/api/v1/orders", "/apis", "/items/1", "/items/123456", "/items/", "/items/1/2", "/x/../api/", "//api/x", "/%61pi/x"];
  const headerSets: Record<string, string>[] = [{}, { "x-canary": "yes" }, { "x-canary": "YES" }, { "x-canary": "yes", other: "1" }, { "x-other": "yes" }];

  it("for 600 generated requests on every port", () => {
    for (let round = 0; round < 600; round++) {
      const view = request(pick(hosts), pick(paths), pick(headerSets), pick(["GET", "POST", "HEAD"]));
      const port = pick([ports.http, ports.https, ports.tls, ports.tcp]);
      const sni = pick([undefined, "secure.example.com", "pass.example.com", "term.example.com", "nope.example.com"]);
      expect(decide(istio, port, view, sni), `${port} ${view.host} ${view.path} ${sni}`).toBe(decide(gatewayApi, port, view, sni));
    }
  });
});

describe("host names", () => {
  it.each([
    ["*", "anything.example.com", true],
    ["*", "*", true],
    ["*.example.com", "a.example.com", true],
    ["*.example.com", "a.b.example.com", true],
    ["*.example.com", "example.com", false],
    ["*.example.com", "*.b.example.com", true],
    ["*.b.example.com", "*.example.com", false],
    ["a.example.com", "a.example.com", true],
    ["a.example.com", "*", false],
    ["a.example.com", "b.example.com", false],
  ])("%s covers %s: %s", (pattern, host, covers) => expect(hostCovers(pattern, host)).toBe(covers));

  it("intersects a listener's names with a route's", () => {
    expect(intersectHosts(["*.example.com"], ["shop.example.com", "x.org"])).toEqual(["shop.example.com"]);
    expect(intersectHosts(["shop.example.com"], ["*"])).toEqual(["shop.example.com"]);
    expect(intersectHosts([], ["a.example.com"])).toEqual(["a.example.com"]);
    expect(intersectHosts(["*.example.com"], [])).toEqual(["*.example.com"]);
    expect(intersectHosts(["a.example.com"], ["b.example.com"])).toEqual([]);
  });

  it("reads a request's host", () => {
    expect(requestHost("Shop.Example.COM:443")).toBe("shop.example.com");
    expect(requestHost("shop.example.com.")).toBe("shop.example.com");
    expect(requestHost("[::1]:8080")).toBe("[::1]");
    expect(requestHost(undefined)).toBe("");
  });
});
