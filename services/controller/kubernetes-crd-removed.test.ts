/**
 * A CRD removed while its resource is watched (the Gateway API uninstalled):
 * the resumed watch answers 404. The source lists again, finds the API gone and
 * drops its objects, instead of retrying the watch for ever with the removed
 * kind's objects still in the catalog.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { FakeKubeApi } from "../../test/support/fake-kube-api.ts";
import { sampleService } from "../../test/support/manifests.ts";
import { eventually } from "../../test/support/ports.ts";
import { KubernetesSource } from "./kubernetes-source.ts";

const directory = mkdtempSync(join(tmpdir(), "leafmesh-k8s-crd-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

describe("a CRD removed while watched", () => {
  it("relists on the watch's 404 and drops the kind's objects; the Services stay", async () => {
    const api = await FakeKubeApi.start({ gatewayApi: true });
    const clock = new ManualClock();
    const source = new KubernetesSource({ kubeconfig: api.writeKubeconfig(directory, `kubeconfig-${api.port}`), log: silentLogger(), clock, retryInitialMs: 50, retryMaxMs: 200, optionalRecheckMs: 60_000 });
    try {
      for (const object of sampleService({ name: "web", clusterIP: "198.19.0.1", namespace: "demo" })) api.apply(object);
      api.apply({
        apiVersion: "gateway.networking.k8s.io/v1",
        kind: "HTTPRoute",
        metadata: { name: "shop", namespace: "demo" },
        spec: { parentRefs: [{ name: "edge" }], rules: [{ backendRefs: [{ name: "web", port: 80 }] }] },
      });
      await source.start();
      const gatewayApi = () => source.status().filter((entry) => entry.group === "gateway.networking.k8s.io");
      await eventually(() => gatewayApi().every((entry) => entry.state === "watching"), 5_000, "the Gateway API watched");
      expect(source.snapshot().has("httproute.demo.shop")).toBe(true);

      api.options.gatewayApi = false; // the CRDs deleted: every request for them is 404 from now on
      api.dropWatches();
      // Each resumed watch answers 404; the relist comes after a backoff on the manual clock.
      await eventually(() => {
        clock.advance(1_000);
        return gatewayApi().every((entry) => entry.state === "absent");
      }, 5_000, "the Gateway API found gone");
      expect(source.snapshot().has("httproute.demo.shop")).toBe(false);
      expect(source.snapshot().has("svc.demo.web")).toBe(true);
      expect(source.status().find((entry) => entry.resource === "services")).toMatchObject({ state: "watching", failures: 0 });
    } finally {
      await source.stop();
      await api.close();
    }
  });
});
