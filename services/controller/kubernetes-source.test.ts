import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { KubeConfig } from "@kubernetes/client-node";
import { Kvm } from "@nats-io/kv";
import { pino } from "pino";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { buckets } from "../../bus/subjects.ts";
import { ManualClock } from "../../lib/clock.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { silentLogger } from "../../lib/log.ts";
import { FakeKubeApi, type FakeKubeApiOptions, type FakeResource } from "../../test/support/fake-kube-api.ts";
import { sampleService } from "../../test/support/manifests.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { startHubProcess, stopAllProcesses } from "../../test/support/processes.ts";
import { KubernetesSource, type KubernetesSourceOptions } from "./kubernetes-source.ts";
import { describeCatalogSourceContract } from "../../test/support/source-contract.ts";
import type { CatalogChange, CatalogRejection } from "./source.ts";

const directory = mkdtempSync(join(tmpdir(), "leafmesh-k8s-"));
afterAll(async () => {
  await stopAllProcesses();
  rmSync(directory, { recursive: true, force: true });
});

const apis: FakeKubeApi[] = [];
const sources: KubernetesSource[] = [];
afterEach(async () => {
  await Promise.all(sources.splice(0).map((source) => source.stop()));
  await Promise.all(apis.splice(0).map((api) => api.close()));
});

/** A self-signed certificate for 127.0.0.1, made by openssl (scripts/packages.d/kubernetes.txt). */
function selfSignedCertificate(): { key: string; cert: string } {
  const key = join(directory, "api.key");
  const cert = join(directory, "api.crt");
  try {
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "pipe" });
  } catch (error) {
    throw new Error("openssl is needed to make the fake API server's certificate: apt-get install -y openssl (scripts/install.sh does)", { cause: error });
  }
  return { key: readFileSync(key, "utf8"), cert: readFileSync(cert, "utf8") };
}

async function startApi(options: FakeKubeApiOptions = {}): Promise<FakeKubeApi> {
  const api = await FakeKubeApi.start(options);
  apis.push(api);
  return api;
}

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** A real pino logger whose lines the test can read. */
function capturedLogger() {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const text of chunk.toString("utf8").split("\n")) if (text) lines.push(JSON.parse(text) as LogLine);
      done();
    },
  });
  return { log: pino({ level: "debug" }, stream), lines };
}

function makeSource(api: FakeKubeApi, options: Partial<KubernetesSourceOptions> = {}) {
  const source = new KubernetesSource({ kubeconfig: api.writeKubeconfig(directory, `kubeconfig-${api.port}`), log: silentLogger(), retryInitialMs: 50, retryMaxMs: 200, ...options });
  sources.push(source);
  const changes: CatalogChange[] = [];
  const rejections: CatalogRejection[] = [];
  source.onChange((batch) => changes.push(...batch));
  source.onReject((rejection) => rejections.push(rejection));
  return { source, changes, rejections };
}

async function startedSource(api: FakeKubeApi, options: Partial<KubernetesSourceOptions> = {}) {
  const handle = makeSource(api, options);
  await handle.source.start();
  expect(handle.source.synced).toBe(true);
  // Both watches open: what the API does from here on reaches the source as events.
  await eventually(() => api.openWatches === 2 + (api.options.istio ? 1 : 0), 5_000, "the watches to open");
  return handle;
}

function service(name: string, clusterIP: string, port = 80, namespace = "demo"): object {
  return sampleService({ name, clusterIP, port, namespace })[0];
}

function slice(name: string, namespace = "demo"): object {
  return sampleService({ name, clusterIP: "198.19.0.1", namespace })[1];
}

const destinationRule = {
  apiVersion: "networking.istio.io/v1",
  kind: "DestinationRule",
  metadata: { name: "web", namespace: "demo" },
  spec: { host: "web.demo.svc.cluster.local", trafficPolicy: { loadBalancer: { simple: "LEAST_REQUEST" } } },
};

function port(source: KubernetesSource, key: string): number | undefined {
  const object = source.snapshot().get(key);
  return object?.kind === "Service" ? object.ports[0]?.port : undefined;
}

function requests(api: FakeKubeApi, resource: FakeResource, watch: boolean) {
  return api.requests.filter((request) => request.resource === resource && request.watch === watch);
}

describeCatalogSourceContract("KubernetesSource over the fake API", async (clock) => {
  const api = await FakeKubeApi.start();
  const kubeconfig = api.writeKubeconfig(directory, `kubeconfig-${api.port}`);
  const source = () => new KubernetesSource({ kubeconfig, log: silentLogger(), clock, retryInitialMs: 50, retryMaxMs: 200 });
  return {
    source: source(),
    twin: source,
    put: async (raw) => void api.apply(raw),
    remove: async (kind, namespace, name) => void api.delete(kind, namespace, name),
    reread: async () => {
      const lists = () => requests(api, "services", false).length + requests(api, "endpointslices", false).length;
      const before = lists();
      // History forgotten and the watches cut: the resumes get 410 Gone, and each resource lists again.
      api.compact();
      api.dropWatches();
      await eventually(() => lists() === before + 2 && api.openWatches === 2, 10_000, "the relists and the watches after them");
    },
    close: () => api.close(),
  };
});

describe("KubernetesSource", () => {
  it("reads through a MetaServer-style kubeconfig (plain http, no credentials), with DestinationRules when Istio is served", async () => {
    const api = await startApi({ istio: true });
    for (const raw of [service("web", "198.19.0.1"), slice("web"), destinationRule]) api.apply(raw);
    const { source } = await startedSource(api);
    expect(source.name).toBe(`kubernetes:${api.url}`);
    expect([...source.snapshot().keys()].sort()).toEqual(["dr.demo.web", "eps.demo.web-abc", "svc.demo.web"]);
    const rule = source.snapshot().get("dr.demo.web");
    expect(rule?.kind === "DestinationRule" && rule.loadBalancer).toEqual({ simple: "LEAST_REQUEST" });
    // Lists asked for pages and watches for bookmarks.
    expect(requests(api, "services", false)[0]).toMatchObject({ watch: false });
    expect(requests(api, "services", true)[0]).toMatchObject({ allowWatchBookmarks: true, resourceVersion: api.resourceVersion });
  });

  it("treats a cluster without Istio as having no DestinationRules, logging it once at info", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    const { log, lines } = capturedLogger();
    const clock = new ManualClock();
    const { source } = await startedSource(api, { log, clock, optionalRecheckMs: 60_000 });
    expect([...source.snapshot().keys()]).toEqual(["svc.demo.web"]);
    // Several rechecks later (each asks the three versions Istio has served), still one line, and nothing above info.
    const rulesStatus = () => source.status().find((entry) => entry.resource === "destinationrules");
    for (let recheck = 1; recheck <= 3; recheck++) {
      clock.advance(60_000);
      await eventually(() => rulesStatus()?.lists === 3 * (recheck + 1) && rulesStatus()?.state === "absent", 5_000, `recheck ${recheck}`);
    }
    expect(requests(api, "services", false)).toHaveLength(1);
    const absent = () => lines.filter((line) => /serves no networking\.istio\.io \(not installed\): going on without DestinationRules/.test(line.msg));
    expect(absent()).toHaveLength(1);
    expect(absent()[0].level).toBe(30);
    expect(lines.filter((line) => line.level >= 40)).toEqual([]);
    expect(source.status().find((entry) => entry.resource === "destinationrules")).toMatchObject({ state: "absent", synced: true, objects: 0, failures: 0 });
    expect(source.status().find((entry) => entry.resource === "services")).toMatchObject({ state: "watching", apiVersion: "v1", objects: 1 });
  });

  it("goes on without DestinationRules when the API refuses them (RBAC), and takes them once allowed", async () => {
    const api = await startApi({ istio: true });
    api.apply(service("web", "198.19.0.1"));
    api.apply(destinationRule);
    api.failWith(403, "destinationrules");
    const { log, lines } = capturedLogger();
    const { source } = makeSource(api, { log });
    await source.start();
    expect(source.synced).toBe(true);
    expect([...source.snapshot().keys()]).toEqual(["svc.demo.web"]);
    expect(lines.find((line) => line.level === 40 && line.resource === "destinationrules")?.msg).toMatch(
      /forbidden: the account needs list and watch on destinationrules.networking.istio.io\); going on without DestinationRules/,
    );
    api.failWith(undefined);
    await eventually(() => source.snapshot().has("dr.demo.web"), 5_000, "the DestinationRule once allowed");
  });

  it("lists in pages (limit and continue) from one snapshot", async () => {
    const api = await startApi();
    for (let index = 1; index <= 5; index++) api.apply(service(`svc-${index}`, `198.19.0.${index}`));
    const { source } = await startedSource(api, { pageSize: 2 });
    expect(requests(api, "services", false).map((request) => [request.limit, request.continue?.split(":")[1]])).toEqual([
      ["2", undefined],
      ["2", "2"],
      ["2", "4"],
    ]);
    expect(source.snapshot().size).toBe(5);
    expect(requests(api, "services", true)[0].resourceVersion).toBe(api.resourceVersion);

    // A continue token outlived by the history: the list starts over from the first page, without a failure.
    api.expireContinueTokens(1);
    api.apply(service("svc-6", "198.19.0.6"));
    api.compact();
    api.dropWatches();
    await eventually(() => source.snapshot().size === 6 && api.openWatches === 2, 10_000, "the relist");
    const refused = requests(api, "services", false).filter((request) => request.status === 410);
    expect(refused).toHaveLength(1);
    expect(refused[0].continue).toBeDefined();
    expect(source.status().find((entry) => entry.resource === "services")).toMatchObject({ failures: 0 });
  });

  it("reads one namespace when asked to", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    api.apply(service("other", "198.19.0.2", 80, "elsewhere"));
    const { source, changes } = await startedSource(api, { namespace: "demo" });
    expect([...source.snapshot().keys()]).toEqual(["svc.demo.web"]);
    expect(requests(api, "services", false)[0].namespace).toBe("demo");
    api.apply(service("more", "198.19.0.3", 80, "elsewhere"));
    api.apply(service("api", "198.19.0.4"));
    await eventually(() => source.snapshot().has("svc.demo.api"), 5_000, "the namespaced watch");
    expect(changes.map((change) => change.key)).toEqual(["svc.demo.web", "svc.demo.api"]);
  });

  it("follows ADDED, MODIFIED, DELETED and BOOKMARK events", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    const { source, changes } = await startedSource(api);
    changes.length = 0;

    api.apply(service("db", "198.19.0.2"));
    await eventually(() => source.snapshot().has("svc.demo.db"), 5_000, "ADDED");
    api.apply(service("db", "198.19.0.2", 5432));
    await eventually(() => port(source, "svc.demo.db") === 5432, 5_000, "MODIFIED");
    api.delete("Service", "demo", "db");
    await eventually(() => !source.snapshot().has("svc.demo.db"), 5_000, "DELETED");
    expect(changes.map((change) => `${change.op} ${change.key}`)).toEqual(["put svc.demo.db", "put svc.demo.db", "delete svc.demo.db"]);

    // Other resources move the cluster's resourceVersion on; a BOOKMARK tells the quiet Services watch.
    const bookmarked = api.bumpResourceVersion(7);
    expect(api.bookmark()).toBe(2);
    api.dropWatches();
    await eventually(() => requests(api, "services", true).length === 2, 5_000, "the resumed watch");
    expect(requests(api, "services", true)[1]).toMatchObject({ resourceVersion: bookmarked, allowWatchBookmarks: true });
    expect(requests(api, "services", false)).toHaveLength(1);
  });

  it("resumes a dropped watch from the last resourceVersion without relisting", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    api.apply(slice("web"));
    const { source, changes } = await startedSource(api);
    const lastSeen = api.apply(service("web", "198.19.0.1", 81));
    await eventually(() => port(source, "svc.demo.web") === 81, 5_000, "the edit");
    changes.length = 0;

    api.dropWatches();
    // Made while no watch is open: the resumed watch must replay it.
    api.apply(service("web", "198.19.0.1", 82));
    await eventually(() => port(source, "svc.demo.web") === 82, 5_000, "the change made while the watch was down");
    expect(changes.map((change) => `${change.op} ${change.key}`)).toEqual(["put svc.demo.web"]);
    expect(requests(api, "services", false)).toHaveLength(1);
    expect(requests(api, "endpointslices", false)).toHaveLength(1);
    expect(requests(api, "services", true).map((request) => request.resourceVersion)).toEqual([expect.any(String), lastSeen]);
    expect(source.status().find((entry) => entry.resource === "services")).toMatchObject({ lists: 1, watches: 2, expired: 0, failures: 0 });
  });

  it("takes a watch that outlives its timeout for a dead connection and resumes", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    const clock = new ManualClock();
    const { source } = await startedSource(api, { watchTimeoutSeconds: 1, clock });
    api.freezeWatches();
    api.apply(service("db", "198.19.0.2"));
    expect(source.snapshot().has("svc.demo.db")).toBe(false);
    // 1 s asked of the server, a quarter more and a second of grace: the silent watches are given up for dead.
    clock.advance(2_250);
    await eventually(() => source.snapshot().has("svc.demo.db"), 10_000, "the change after the dead watch was given up");
    expect(requests(api, "services", false)).toHaveLength(1);
  });

  it("takes a line of a watch that is not an event for a broken stream and resumes before it, losing no event", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    const { source } = await startedSource(api);
    api.garbleNextEvent();
    api.apply(service("db", "198.19.0.2"));
    api.apply(service("api", "198.19.0.3"));
    await eventually(() => source.snapshot().has("svc.demo.api"), 5_000, "the event after the broken line");
    // Skipping the line would have lost db for good: the server never sends it again on a watch that goes on.
    await eventually(() => source.snapshot().has("svc.demo.db"), 5_000, "the event of the broken line, from the resumed watch");
    expect(requests(api, "services", false)).toHaveLength(1);
    expect(source.status().find((entry) => entry.resource === "services")?.failures).toBe(1);
  });

  it("relists after every watch against a server that replays instead of resuming (KubeEdge's MetaServer), so deletions are not missed", async () => {
    const api = await startApi({ metaServer: true });
    for (const raw of [service("a", "198.19.0.1"), service("b", "198.19.0.2"), slice("a")]) api.apply(raw);
    const { log, lines } = capturedLogger();
    const { source, changes } = await startedSource(api, { log });
    // The first watch replays what the list gave: nothing changes, and the source learns how this server behaves.
    await eventually(() => lines.some((line) => /replays every object instead of resuming/.test(line.msg)), 5_000, "the replay noticed");
    expect(changes.map((change) => change.key).sort()).toEqual(["eps.demo.a-abc", "svc.demo.a", "svc.demo.b"]);
    changes.length = 0;

    await api.stop();
    api.delete("Service", "demo", "b");
    api.apply(service("c", "198.19.0.3"));
    await api.start();
    await eventually(() => source.snapshot().has("svc.demo.c") && !source.snapshot().has("svc.demo.b"), 10_000, "the catalog after the outage");
    expect(changes.map((change) => `${change.op} ${change.key}`).sort()).toEqual(["delete svc.demo.b", "put svc.demo.c"]);
    expect(requests(api, "services", false).length).toBeGreaterThanOrEqual(2);
    expect(lines.filter((line) => /replays every object/.test(line.msg)).length).toBe(2); // once per resource that had objects
  });

  it("relists on 410 Gone and emits only the difference", async () => {
    const api = await startApi();
    for (const raw of [service("a", "198.19.0.1"), service("b", "198.19.0.2"), service("c", "198.19.0.3"), slice("a")]) api.apply(raw);
    const { source, changes } = await startedSource(api);
    changes.length = 0;

    // Cut off for long: the API moved on and compacted the history the source would resume from.
    await api.stop();
    api.delete("Service", "demo", "b");
    api.apply(service("c", "198.19.0.3", 8443));
    api.apply(service("d", "198.19.0.4"));
    api.compact();
    await api.start();

    await eventually(() => source.snapshot().has("svc.demo.d") && changes.length >= 3, 10_000, "the relist after 410");
    await eventually(() => requests(api, "endpointslices", false).length === 2, 5_000, "the EndpointSlices relist");
    expect(changes.map((change) => `${change.op} ${change.key}`).sort()).toEqual(["delete svc.demo.b", "put svc.demo.c", "put svc.demo.d"]);
    expect(port(source, "svc.demo.c")).toBe(8443);
    expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.a-abc", "svc.demo.a", "svc.demo.c", "svc.demo.d"]);
    expect(api.requests.filter((request) => request.watch && request.status === 410).map((request) => request.resource).sort()).toEqual(["endpointslices", "services"]);
    expect(requests(api, "services", false)).toHaveLength(2);
    expect(source.status().find((entry) => entry.resource === "services")).toMatchObject({ lists: 2, expired: 1, objects: 3 });
  });

  it("relists on 410 with nothing changed and emits nothing", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    const { source, changes } = await startedSource(api);
    changes.length = 0;
    api.compact();
    api.dropWatches();
    await eventually(() => requests(api, "services", false).length === 2 && requests(api, "endpointslices", false).length === 2, 5_000, "the relists");
    await eventually(() => api.openWatches === 2, 5_000, "the watches after the relist");
    expect(changes).toEqual([]);
    expect([...source.snapshot().keys()]).toEqual(["svc.demo.web"]);
  });

  it("does not spin when even a fresh list's resourceVersion is expired: it waits on its clock", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    api.expireEveryWatch(true);
    const clock = new ManualClock();
    const { source } = makeSource(api, { clock, retryInitialMs: 1_000 });
    await source.start();
    expect(source.synced).toBe(true);
    const services = () => source.status().find((entry) => entry.resource === "services");
    await eventually(() => services()?.state === "backoff", 5_000, "the wait after the 410");
    expect(requests(api, "services", false)).toHaveLength(1);
    expect(requests(api, "services", true)).toHaveLength(1);

    api.expireEveryWatch(false);
    clock.advance(2_000);
    await eventually(() => services()?.state === "watching" && api.openWatches === 2, 5_000, "the watch after the next list");
    expect(requests(api, "services", false)).toHaveLength(2);
    expect(services()).toMatchObject({ expired: 1, lists: 2 });
    expect([...source.snapshot().keys()]).toEqual(["svc.demo.web"]);
  });

  it("starts while the API is down and takes the catalog when it comes up", async () => {
    const api = await startApi({ port: await freePort() });
    await api.stop();
    api.apply(service("web", "198.19.0.1"));
    api.apply(slice("web"));
    const { log, lines } = capturedLogger();
    const { source, changes } = makeSource(api, { log });
    await source.start();
    expect(source.synced).toBe(false);
    expect(source.snapshot().size).toBe(0);
    expect(lines.some((line) => line.level === 40 && /connection refused/.test(line.msg))).toBe(true);

    let unsyncedBatches = 0;
    source.onChange(() => void (source.synced || unsyncedBatches++));
    await api.start();
    await eventually(() => source.synced, 10_000, "the sync after the API came up");
    // Nothing went out before every resource was listed: a listener never sees a half catalog as if it were all.
    expect(unsyncedBatches).toBe(0);
    expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.web-abc", "svc.demo.web"]);
    expect(changes.map((change) => change.key).sort()).toEqual(["eps.demo.web-abc", "svc.demo.web"]);
    expect(lines.some((line) => line.level === 30 && /reachable again/.test(line.msg))).toBe(true);
  });

  it("keeps the last catalog while the API is down and catches up without a relist when it returns", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    api.apply(slice("web"));
    const { log, lines } = capturedLogger();
    const { source, changes } = await startedSource(api, { log });
    changes.length = 0;

    await api.stop();
    await eventually(() => lines.some((line) => line.level === 40 && /keeping the last catalog/.test(line.msg)), 5_000, "the source to notice");
    // The open watch is cut first; the retries then find the port closed.
    await eventually(() => source.status().find((entry) => entry.resource === "services" && entry.state === "backoff" && /connection refused/.test(entry.lastError ?? "")), 5_000, "the backoff state");
    expect(source.synced).toBe(true);
    expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.web-abc", "svc.demo.web"]);
    expect(changes).toEqual([]);

    api.apply(service("api", "198.19.0.2"));
    await api.start();
    await eventually(() => source.snapshot().has("svc.demo.api"), 10_000, "the change made during the outage");
    expect(changes.map((change) => `${change.op} ${change.key}`)).toEqual(["put svc.demo.api"]);
    expect(requests(api, "services", false)).toHaveLength(1);
    expect(source.status().find((entry) => entry.resource === "services")).toMatchObject({ state: "watching", lists: 1 });
    expect(source.status().find((entry) => entry.resource === "services")?.lastError).toBeUndefined();
  });

  it("backs off exponentially up to the maximum on the handed-in clock, and says why it fails", async () => {
    const api = await startApi();
    api.failWith(403);
    const clock = new ManualClock();
    const { log, lines } = capturedLogger();
    const { source } = makeSource(api, { log, clock, retryInitialMs: 1_000, retryMaxMs: 8_000 });
    await source.start();
    expect(source.synced).toBe(false);
    const warning = lines.find((line) => line.level === 40 && line.resource === "services");
    expect(warning?.msg).toMatch(/forbidden: the account needs list and watch on services/);

    const delays = () => lines.filter((line) => line.resource === "services" && typeof line.retryInMs === "number").map((line) => line.retryInMs as number);
    for (let attempt = 2; attempt <= 6; attempt++) {
      clock.advance(10_000);
      await eventually(() => delays().length === attempt, 5_000, `attempt ${attempt}`);
    }
    const expected = [1_000, 2_000, 4_000, 8_000, 8_000, 8_000];
    delays().forEach((delay, index) => {
      expect(delay).toBeGreaterThanOrEqual(expected[index] * 0.8);
      expect(delay).toBeLessThanOrEqual(expected[index] * 1.2);
    });
    expect(requests(api, "services", false)).toHaveLength(6);

    api.failWith(undefined);
    clock.advance(10_000);
    await eventually(() => source.synced, 5_000, "the sync once allowed");
  });

  it("reports an invalid object once with object and field, also across relists, and drops it when deleted", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    api.apply({ ...slice("web"), metadata: { name: "orphan", namespace: "demo" } });
    const { source, rejections, changes } = await startedSource(api);
    expect(rejections).toEqual([
      expect.objectContaining({ source: source.name, object: "EndpointSlice demo/orphan", field: 'metadata.labels["kubernetes.io/service-name"]' }),
    ]);
    api.compact();
    api.dropWatches();
    await eventually(() => requests(api, "endpointslices", false).length === 2 && api.openWatches === 2, 5_000, "the relist");
    expect(rejections).toHaveLength(1);
    expect(source.status().find((entry) => entry.resource === "endpointslices")).toMatchObject({ rejected: 1, objects: 0 });
    changes.length = 0;
    api.delete("EndpointSlice", "demo", "orphan");
    api.apply(slice("web"));
    await eventually(() => source.snapshot().has("eps.demo.web-abc"), 5_000, "the next slice");
    expect(changes.map((change) => `${change.op} ${change.key}`)).toEqual(["put eps.demo.web-abc"]);
  });

  it("reads a real API's way: https with its CA and a bearer token; a wrong token is a clear 401", async () => {
    const api = await startApi({ tls: selfSignedCertificate(), token: "s3cret" });
    api.apply(service("web", "198.19.0.1"));
    const { source } = await startedSource(api);
    expect(source.name).toBe(`kubernetes:https://127.0.0.1:${api.port}`);
    api.apply(service("db", "198.19.0.2"));
    await eventually(() => source.snapshot().has("svc.demo.db"), 5_000, "an event over the https watch");

    const { log, lines } = capturedLogger();
    const wrong = new KubernetesSource({ kubeconfig: api.writeKubeconfig(directory, "kubeconfig-wrong", { token: "guess" }), log, retryInitialMs: 50, retryMaxMs: 200 });
    sources.push(wrong);
    await wrong.start();
    expect(wrong.synced).toBe(false);
    expect(lines.find((line) => line.level === 40 && line.resource === "services")?.msg).toMatch(/not authenticated: check the kubeconfig's credentials/);
  });

  it("times out a hung API and retries, and stops while a request hangs", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    api.stall(true);
    // start() does not wait out the request timeout: it returns and the lists go on.
    const { log, lines } = capturedLogger();
    const { source } = makeSource(api, { log, requestTimeoutMs: 3_000, startWaitMs: 100 });
    await source.start();
    expect(source.synced).toBe(false);
    await eventually(() => source.status().find((entry) => entry.resource === "services" && entry.state === "backoff"), 10_000, "the request timeout");
    // The operator reads what went wrong, not the error's code (a LeafmeshError's code is no socket's ECONNREFUSED).
    expect(source.status().find((entry) => entry.resource === "services")?.lastError).toMatch(/^GET \/api\/v1\/services\?limit=500: no answer within 3000 ms$/);
    expect(lines.find((line) => line.level === 40 && line.resource === "services")?.msg).toMatch(/^Kubernetes API request failed \(GET \/api\/v1\/services\?limit=500: no answer within 3000 ms\); keeping/);
    api.stall(false);
    await eventually(() => source.synced, 5_000, "the sync once the API answers");
    await eventually(() => api.openWatches === 2, 5_000, "the watches");

    api.stall(true);
    api.dropWatches();
    await eventually(() => requests(api, "services", true).length >= 2, 5_000, "the hung watch request");
    await source.stop();
    expect([...source.snapshot().keys()]).toEqual(["svc.demo.web"]);
    expect(new Set(source.status().map((entry) => entry.state))).toEqual(new Set(["stopped"]));
  });

  it("takes objects as a real API server returns them (status, managedFields, uids, dual-stack, hints)", async () => {
    const api = await startApi();
    api.apply({
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: "web",
        namespace: "shop",
        uid: "0b6d2a4e-6a55-4c2e-9d0f-3b0c6a1f9e11",
        creationTimestamp: "2026-11-20T10:00:00Z",
        labels: { app: "web" },
        annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
        managedFields: [{ manager: "kubectl-client-side-apply", operation: "Update", apiVersion: "v1", time: "2026-11-20T10:00:00Z", fieldsType: "FieldsV1", fieldsV1: { "f:spec": {} } }],
      },
      spec: {
        type: "ClusterIP",
        clusterIP: "10.96.12.34",
        clusterIPs: ["10.96.12.34", "fd00:10:96::1234"],
        ipFamilies: ["IPv4", "IPv6"],
        ipFamilyPolicy: "PreferDualStack",
        internalTrafficPolicy: "Cluster",
        selector: { app: "web" },
        sessionAffinity: "None",
        ports: [
          { name: "http", protocol: "TCP", port: 80, targetPort: "http" },
          { name: "dns", protocol: "UDP", port: 53, targetPort: 5353 },
        ],
      },
      status: { loadBalancer: {} },
    });
    api.apply({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: {
        name: "web-x7k2p",
        namespace: "shop",
        generateName: "web-",
        labels: { "kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io" },
        ownerReferences: [{ apiVersion: "v1", kind: "Service", name: "web", uid: "0b6d2a4e-6a55-4c2e-9d0f-3b0c6a1f9e11", controller: true, blockOwnerDeletion: true }],
      },
      addressType: "IPv4",
      endpoints: [
        {
          addresses: ["10.244.1.7"],
          conditions: { ready: true, serving: true, terminating: false },
          nodeName: "edge-a",
          zone: "site-1",
          targetRef: { kind: "Pod", namespace: "shop", name: "web-5d9c7b-abcde", uid: "9f1c0f5e-1111-2222-3333-444455556666" },
          hints: { forZones: [{ name: "site-1" }] },
        },
        { addresses: ["10.244.2.9"], conditions: { ready: false, serving: true, terminating: true }, nodeName: "edge-b" },
      ],
      ports: [
        { name: "http", protocol: "TCP", port: 8080 },
        { name: "dns", protocol: "UDP", port: 5353 },
      ],
    });
    const { source, rejections } = await startedSource(api);
    expect(rejections).toEqual([]);
    const web = source.snapshot().get("svc.shop.web");
    expect(web).toMatchObject({ kind: "Service", clusterIPs: ["10.96.12.34", "fd00:10:96::1234"], ipFamilies: ["IPv4", "IPv6"], selector: { app: "web" } });
    expect(web?.kind === "Service" && web.ports.map((entry) => `${entry.name}:${entry.port}/${entry.protocol}->${entry.targetPort}`)).toEqual(["http:80/TCP->http", "dns:53/UDP->5353"]);
    const endpoints = source.snapshot().get("eps.shop.web-x7k2p");
    expect(endpoints).toMatchObject({ kind: "EndpointSlice", serviceName: "web" });
    expect(endpoints?.kind === "EndpointSlice" && endpoints.endpoints.map((entry) => [entry.addresses[0], entry.nodeName, entry.conditions])).toEqual([
      ["10.244.1.7", "edge-a", { ready: true, serving: true, terminating: false }],
      ["10.244.2.9", "edge-b", { ready: false, serving: true, terminating: true }],
    ]);
  });

  it("refuses a kubeconfig it cannot use, naming it", () => {
    expect(() => new KubernetesSource({ kubeconfig: join(directory, "missing"), log: silentLogger() })).toThrow(LeafmeshError);
    const empty = new KubeConfig();
    empty.loadFromOptions({ clusters: [], users: [], contexts: [], currentContext: "" });
    expect(() => new KubernetesSource({ kubeconfig: empty, log: silentLogger() })).toThrow(/no current cluster/);
  });
});

describe("leafmesh hub --kubeconfig, end to end", () => {
  it("publishes what the API holds into KV mesh-catalog, follows changes, and keeps it while the API is away", async () => {
    const api = await startApi();
    api.apply(service("web", "198.19.0.1"));
    api.apply(slice("web"));
    const hub = await startHubProcess({ name: "hub-k8s", kubeconfig: api.writeKubeconfig(directory, "kubeconfig-hub") });
    const kv = await new Kvm(await hub.connection()).open(buckets.catalog);
    const keys = async () => {
      const found: string[] = [];
      for await (const key of await kv.keys()) found.push(key);
      return found.sort().join(" ");
    };
    await eventually(async () => (await keys()) === "eps.demo.web-abc svc.demo.web", 20_000, "the catalog in KV");

    api.apply(service("db", "198.19.0.2", 5432));
    api.delete("Service", "demo", "web");
    await eventually(async () => (await keys()) === "eps.demo.web-abc svc.demo.db", 10_000, "the changes in KV");
    expect((await kv.get("svc.demo.db"))?.json<{ ports: { port: number }[] }>().ports[0].port).toBe(5432);

    await api.stop();
    await eventually(() => /Kubernetes API request failed/.test(hub.output()), 10_000, "the hub to notice the API is away");
    expect(await keys()).toBe("eps.demo.web-abc svc.demo.db");
    api.apply(service("api", "198.19.0.3"));
    await api.start();
    // The hub's source backs off up to 30 s (±20 %) while the API is away: its next try may be that far.
    await eventually(async () => (await keys()) === "eps.demo.web-abc svc.demo.api svc.demo.db", 40_000, "the change made while the API was away");
  });

  it("publishes once the API comes up when the hub started while it was down", async () => {
    const api = await startApi({ port: await freePort() });
    await api.stop();
    api.apply(service("web", "198.19.0.1"));
    api.apply(slice("web"));
    const hub = await startHubProcess({ name: "hub-k8s-late", kubeconfig: api.writeKubeconfig(directory, "kubeconfig-hub-late") });
    const kv = await new Kvm(await hub.connection()).open(buckets.catalog);
    const keys = async () => {
      const found: string[] = [];
      for await (const key of await kv.keys()) found.push(key);
      return found.sort().join(" ");
    };
    expect(await keys()).toBe("");
    await api.start();
    await eventually(async () => (await keys()) === "eps.demo.web-abc svc.demo.web", 20_000, "the catalog in KV once the API is up");
  });
});
