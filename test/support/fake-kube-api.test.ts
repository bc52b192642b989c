/**
 * The fake API's wire format, checked twice: by hand against what the real API
 * server sends, and by the official client (`@kubernetes/client-node`'s typed
 * list and its informer), which must read it as it reads a real cluster.
 */
import { CoreV1Api, KubeConfig, makeInformer, type V1Service } from "@kubernetes/client-node";
import { afterEach, describe, expect, it } from "vitest";
import { FakeKubeApi } from "./fake-kube-api.ts";
import { eventually } from "./ports.ts";

const apis: FakeKubeApi[] = [];
const stops: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
  await Promise.all(apis.splice(0).map((api) => api.close()));
});

async function startApi(options: { istio?: boolean } = {}): Promise<FakeKubeApi> {
  const api = await FakeKubeApi.start(options);
  apis.push(api);
  return api;
}

const web = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "web", namespace: "demo" },
  spec: { clusterIP: "198.19.0.1", ports: [{ name: "http", port: 80, protocol: "TCP" }] },
};

/** Reads a watch stream's lines until `count` events arrived or the stream ended. */
async function readEvents(url: string, count: number): Promise<{ type: string; object: Record<string, unknown> }[]> {
  const response = await fetch(url);
  expect(response.status).toBe(200);
  const events: { type: string; object: Record<string, unknown> }[] = [];
  const decoder = new TextDecoder();
  let buffer = "";
  const reader = response.body!.getReader();
  // Bounded by `count` and by the stream's end.
  while (events.length < count) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      events.push(JSON.parse(buffer.slice(0, newline)));
      buffer = buffer.slice(newline + 1);
    }
  }
  await reader.cancel();
  return events;
}

describe("FakeKubeApi", () => {
  it("lists like the API server: a typed List with a resourceVersion, items without kind; 404 Status for what it does not serve", async () => {
    const api = await startApi();
    api.apply(web);
    const list = (await (await fetch(`${api.url}/api/v1/services`)).json()) as { kind: string; apiVersion: string; metadata: { resourceVersion: string }; items: Record<string, unknown>[] };
    expect(list).toMatchObject({ kind: "ServiceList", apiVersion: "v1", metadata: { resourceVersion: api.resourceVersion } });
    expect(list.items).toHaveLength(1);
    expect(list.items[0].kind).toBeUndefined();
    expect(list.items[0].metadata).toMatchObject({ name: "web", namespace: "demo", resourceVersion: api.resourceVersion, uid: expect.any(String) });
    expect(((await (await fetch(`${api.url}/api/v1/namespaces/other/services`)).json()) as { items: unknown[] }).items).toEqual([]);

    const missing = await fetch(`${api.url}/apis/networking.istio.io/v1/destinationrules`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ kind: "Status", status: "Failure", reason: "NotFound", code: 404 });
  });

  it("streams watch events from a resourceVersion, BOOKMARKs when allowed, and ERROR 410 after compaction", async () => {
    const api = await startApi();
    const from = api.resourceVersion;
    api.apply(web);
    api.apply({ ...web, spec: { ...web.spec, ports: [{ name: "http", port: 81, protocol: "TCP" }] } });
    api.delete("Service", "demo", "web");
    const replayed = await readEvents(`${api.url}/api/v1/services?watch=true&resourceVersion=${from}`, 3);
    expect(replayed.map((event) => event.type)).toEqual(["ADDED", "MODIFIED", "DELETED"]);
    expect(replayed[0].object).toMatchObject({ kind: "Service", apiVersion: "v1" });

    const bookmarked = readEvents(`${api.url}/api/v1/services?watch=true&resourceVersion=${api.resourceVersion}&allowWatchBookmarks=true`, 1);
    // Only the watch that allowed bookmarks gets one; the replay's closed watch may still be counted open for a moment.
    await eventually(() => api.bookmark() === 1, 5_000, "the bookmarking watch");
    expect(await bookmarked).toEqual([{ type: "BOOKMARK", object: { kind: "Service", apiVersion: "v1", metadata: { resourceVersion: api.resourceVersion } } }]);

    api.compact();
    const expired = await readEvents(`${api.url}/api/v1/services?watch=true&resourceVersion=${from}`, 1);
    expect(expired).toEqual([{ type: "ERROR", object: expect.objectContaining({ kind: "Status", code: 410, reason: "Expired" }) }]);
  });

  it("is read by the official client's typed API and informer like a real cluster, including its relist after 410", async () => {
    const api = await startApi();
    api.apply(web);
    const config = new KubeConfig();
    // client-node refuses plain http unless told to skip TLS verification.
    config.loadFromOptions({
      clusters: [{ name: "fake", server: api.url, skipTLSVerify: true }],
      users: [{ name: "nobody" }],
      contexts: [{ name: "fake", cluster: "fake", user: "nobody" }],
      currentContext: "fake",
    });
    const core = config.makeApiClient(CoreV1Api);
    const typed = await core.listServiceForAllNamespaces();
    expect(typed.items.map((service) => `${service.metadata?.namespace}/${service.metadata?.name}:${service.spec?.ports?.[0].port}`)).toEqual(["demo/web:80"]);

    const seen: string[] = [];
    const informer = makeInformer<V1Service>(config, "/api/v1/services", () => core.listServiceForAllNamespaces());
    informer.on("add", (service) => seen.push(`add ${service.metadata?.name}`));
    informer.on("update", (service) => seen.push(`update ${service.metadata?.name}:${service.spec?.ports?.[0].port}`));
    informer.on("delete", (service) => seen.push(`delete ${service.metadata?.name}`));
    await informer.start();
    stops.push(() => informer.stop());
    await eventually(() => api.openWatches === 1, 5_000, "the informer's watch");
    api.apply({ ...web, spec: { ...web.spec, ports: [{ name: "http", port: 81, protocol: "TCP" }] } });
    api.apply({ ...web, metadata: { name: "db", namespace: "demo" } });
    await eventually(() => seen.length === 3, 5_000, "the informer's events");
    expect(seen).toEqual(["add web", "update web:81", "add db"]);

    // The typed list above, the informer's first list, and now its relist after the ERROR 410.
    api.compact();
    api.dropWatches();
    await eventually(() => api.count("services", "list") === 3 && api.openWatches === 1, 5_000, "the informer's relist after 410");
    expect(api.requests.filter((request) => request.watch && request.status === 410)).toHaveLength(1);
  });
});
