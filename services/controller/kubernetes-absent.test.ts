/**
 * How the Kubernetes source says that an optional API is not there: a group
 * not installed (the Gateway API, Istio) once for all its kinds, and a core
 * resource the server does not serve (a MetaServer without Secrets) by its
 * path, not as "( not installed)". The rest keeps working meanwhile.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../lib/clock.ts";
import { FakeKubeApi } from "../../test/support/fake-kube-api.ts";
import { sampleService } from "../../test/support/manifests.ts";
import { eventually } from "../../test/support/ports.ts";
import { KubernetesSource } from "./kubernetes-source.ts";

const directory = mkdtempSync(join(tmpdir(), "leafmesh-k8s-absent-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

function capturedLogger() {
  const lines: { level: number; msg: string; [key: string]: unknown }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const text of chunk.toString("utf8").split("\n")) if (text) lines.push(JSON.parse(text) as (typeof lines)[number]);
      done();
    },
  });
  return { log: pino({ level: "debug" }, stream), lines };
}

describe("an optional API that is not installed", () => {
  it("is said once per group at info, naming its kinds; a core resource not served is said by its path; the Services keep working", async () => {
    const api = await FakeKubeApi.start();
    const clock = new ManualClock();
    const { log, lines } = capturedLogger();
    const source = new KubernetesSource({ kubeconfig: api.writeKubeconfig(directory, `kubeconfig-${api.port}`), log, clock, retryInitialMs: 50, retryMaxMs: 200, optionalRecheckMs: 60_000 });
    try {
      for (const object of sampleService({ name: "web", clusterIP: "198.19.0.1", namespace: "demo" })) api.apply(object);
      await source.start();
      expect(source.synced).toBe(true);
      expect(source.snapshot().has("svc.demo.web")).toBe(true);
      const infos = () => lines.filter((line) => line.level === 30 && /serves no/.test(line.msg)).map((line) => line.msg);
      await eventually(() => infos().length === 3, 5_000, "three lines: two groups and Secrets");
      expect(infos()).toEqual(
        expect.arrayContaining([
          "the API serves no gateway.networking.k8s.io (not installed): going on without Gateways, HTTPRoutes, TCPRoutes, TLSRoutes; looking again every 60 s",
          "the API serves no networking.istio.io (not installed): going on without DestinationRules, Gateways, VirtualServices; looking again every 60 s",
          "the API serves no Secrets (404 on /api/v1/secrets); going on without them, looking again every 60 s",
        ]),
      );
      expect(lines.filter((line) => line.level >= 40)).toEqual([]);
      // Each waits for its next look on the manual clock only once it is absent (the others of a group ask discovery first).
      await eventually(() => source.status().filter((entry) => entry.resource !== "services" && entry.resource !== "endpointslices").every((entry) => entry.state === "absent"), 5_000, "every optional resource absent");

      // Installed later: read at the next look; removed again (the CRDs deleted): its objects go, and it is said again, once.
      api.apply({
        apiVersion: "gateway.networking.k8s.io/v1",
        kind: "HTTPRoute",
        metadata: { name: "shop", namespace: "demo" },
        spec: { parentRefs: [{ name: "edge" }], rules: [{ backendRefs: [{ name: "web", port: 80 }] }] },
      });
      api.options.gatewayApi = true;
      clock.advance(60_000);
      await eventually(() => source.status().filter((entry) => entry.group === "gateway.networking.k8s.io").every((entry) => entry.state === "watching"), 5_000, "the Gateway API read");
      expect(source.snapshot().has("httproute.demo.shop")).toBe(true);
      expect(lines.some((line) => /reading HTTPRoutes from gateway\.networking\.k8s\.io\/v1/.test(line.msg))).toBe(true);
      api.options.gatewayApi = false;
      api.dropWatches();
      // The resumed watches answer 404: each relists after its backoff (on the manual clock), finds nothing and says so.
      await eventually(() => {
        clock.advance(1_000);
        return source.status().filter((entry) => entry.group === "gateway.networking.k8s.io").every((entry) => entry.state === "absent");
      }, 5_000, "the Gateway API found gone");
      expect(source.snapshot().has("httproute.demo.shop")).toBe(false);
      expect(source.snapshot().has("svc.demo.web")).toBe(true);
      expect(infos().filter((text) => text.includes("gateway.networking.k8s.io (not installed)"))).toHaveLength(2);
    } finally {
      await source.stop();
      await api.close();
    }
  });
});
