/**
 * The API server's Retry-After (429 Too Many Requests from priority and
 * fairness, 503 while it starts) against the reflector's own backoff: the
 * source does not ask again before the server said, within retryMaxMs, as
 * client-go's rest client waits.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../lib/clock.ts";
import { FakeKubeApi } from "../../test/support/fake-kube-api.ts";
import { eventually } from "../../test/support/ports.ts";
import { retryAfterMs } from "./kubernetes-client.ts";
import { KubernetesSource } from "./kubernetes-source.ts";

const directory = mkdtempSync(join(tmpdir(), "leafmesh-k8s-retry-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const text of chunk.toString("utf8").split("\n")) if (text) lines.push(JSON.parse(text) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: "debug" }, stream), lines };
}

/** Lets the event loop run what is due (sockets, promises) without moving the manual clock. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 200));

describe("Retry-After from the Kubernetes API", () => {
  it("reads delay-seconds and HTTP dates, and ignores what it cannot read", () => {
    expect(retryAfterMs("5")).toBe(5_000);
    expect(retryAfterMs(["2"])).toBe(2_000);
    expect(retryAfterMs(new Date(1_000_000 + 3_000).toUTCString(), 1_000_000)).toBe(3_000);
    expect(retryAfterMs(undefined)).toBeUndefined();
    expect(retryAfterMs("soon")).toBeUndefined();
  });

  for (const code of [429, 503]) {
    it(`waits what a ${code} with Retry-After asks before asking again, then catches up`, async () => {
      const api = await FakeKubeApi.start();
      const clock = new ManualClock();
      const { log, lines } = capturedLogger();
      const source = new KubernetesSource({ kubeconfig: api.writeKubeconfig(directory, `kubeconfig-${api.port}`), log, clock, retryInitialMs: 100, retryMaxMs: 30_000 });
      try {
        api.failWith(code, "services", 5);
        await source.start();
        expect(source.synced).toBe(false);
        const lists = () => api.requests.filter((request) => request.resource === "services" && !request.watch).length;
        expect(lists()).toBe(1);
        // Its own backoff (100 ms, then 200…) would have asked several times by now.
        clock.advance(4_000);
        await settle();
        expect(lists()).toBe(1);
        const warning = lines.find((line) => line.resource === "services" && typeof line.retryInMs === "number");
        expect(warning?.retryAfterMs).toBe(5_000);
        expect(warning?.retryInMs).toBeGreaterThanOrEqual(5_000);
        if (code === 429) expect(String(warning?.msg)).toMatch(/too many requests/);

        api.failWith(undefined);
        clock.advance(1_500);
        await eventually(() => source.synced, 5_000, "the list once the server's wait is over");
        expect(lists()).toBe(2);
      } finally {
        await source.stop();
        await api.close();
      }
    });
  }
});
