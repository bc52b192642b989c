/**
 * followBucket (kv-follow.ts) against a real nats-server with JetStream: a watch that cannot be made
 * is asked for again after waits that double, not every second (a thousand followers of one hub
 * that answered them too late would otherwise keep it too busy to answer any: docs/limits.md).
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { silentLogger } from "../lib/log.ts";
import { NatsServerSupervisor } from "../nats/supervisor.ts";
import { renderHubConfig } from "../nats/render.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { tempDir } from "../test/support/processes.ts";
import { followBucket } from "./kv-follow.ts";

describe("following a KV bucket", () => {
  let server: NatsServerSupervisor;
  let connection: NatsConnection;

  beforeAll(async () => {
    const dir = tempDir();
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    server = new NatsServerSupervisor({
      name: "kv-follow", dataDir: dir, monitor: { host: "127.0.0.1", port: monitor }, log: silentLogger(),
      configText: renderHubConfig({ serverName: "kv-follow", storeDir: join(dir, "js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }),
    });
    await server.start();
    connection = await connect({ servers: `nats://127.0.0.1:${client}` });
  }, 60_000);

  afterAll(async () => {
    await connection?.close();
    await server?.stop();
  });

  it("asks again after waits that double while no watch can be made, then follows once one can", async () => {
    const kvm = new Kvm(connection);
    const kv = await kvm.create("follow-backoff", { history: 1 });
    await (await jetstreamManager(connection)).streams.delete("KV_follow-backoff");
    const asked: number[] = [];
    const spy = await connect({ servers: connection.getServer() });
    // Each ask starts with the bucket's status (while nothing is loaded yet), which fails without its stream.
    spy.subscribe("$JS.API.STREAM.INFO.KV_follow-backoff", { callback: () => void asked.push(performance.now()) });
    await spy.flush();
    const seen: string[] = [];
    // random 1: every wait is the whole of its step (1, 2, 4 s...), so the asks are known.
    const follower = followBucket({ kv, log: silentLogger(), random: () => 1, onEntry: (entry) => void seen.push(entry.key) });
    const started = performance.now();
    try {
      await new Promise((resolve) => setTimeout(resolve, 6_500));
      // Asked at ~0, ~1, ~3 s (then ~7 s); a fixed second between asks would have asked 7 times.
      const offsets = asked.map((at) => Math.round(at - started));
      expect(offsets.length, `asks at ${offsets.join(", ")} ms`).toBeGreaterThanOrEqual(2);
      expect(offsets.length, `asks at ${offsets.join(", ")} ms`).toBeLessThanOrEqual(3);
      for (let index = 2; index < offsets.length; index++) expect(offsets[index] - offsets[index - 1]).toBeGreaterThan((offsets[index - 1] - offsets[index - 2]) * 1.5);
      const again = await kvm.create("follow-backoff", { history: 1 });
      await again.put("late", "1");
      await eventually(() => seen.includes("late"), 15_000, "the follower to find the bucket at its next ask");
    } finally {
      await follower.stop();
      await spy.close();
    }
  }, 30_000);
  it("follows a bucket made again from its first revision after restart(), and says when it holds all of it", async () => {
    const kvm = new Kvm(connection);
    const kv = await kvm.create("follow-restart", { history: 1 });
    for (const key of ["a", "b", "c", "d"]) await kv.put(key, "old");
    const seen: string[] = [];
    const follower = followBucket({ kv, log: silentLogger(), retryMs: 100, onEntry: (entry) => void seen.push(`${entry.key}=${entry.string()}`) });
    try {
      await eventually(() => follower.loaded && seen.length === 4, 10_000, "the first values");
      await (await jetstreamManager(connection)).streams.delete("KV_follow-restart");
      const again = await kvm.create("follow-restart", { history: 1 });
      await again.put("a", "new");
      await again.put("e", "new");
      let reloaded = 0;
      follower.restart(() => void reloaded++);
      await eventually(() => reloaded === 1, 10_000, "the reload to end");
      // Revisions 1 and 2 of the new stream: without the restart they are at or below the last one seen (4) and skipped.
      expect(seen.slice(4)).toEqual(["a=new", "e=new"]);
      expect(follower.lastRevision).toBe(2);
      await again.put("f", "new");
      await eventually(() => seen.includes("f=new"), 10_000, "a change after the reload");
      expect(reloaded).toBe(1);
    } finally {
      await follower.stop();
    }
  });
});
