/**
 * Pipelined KV puts (kv-puts.ts) against a real nats-server with JetStream:
 * what they store is what kv.put stores, and every way a put can fail rejects
 * it with the reason — never a put left pending, never one lost silently.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import { silentLogger } from "../lib/log.ts";
import { NatsServerSupervisor } from "../nats/supervisor.ts";
import { renderHubConfig } from "../nats/render.ts";
import { freePort } from "../test/support/ports.ts";
import { tempDir } from "../test/support/processes.ts";
import { KvPuts } from "./kv-puts.ts";

describe("pipelined KV puts", () => {
  let server: NatsServerSupervisor;
  let url: string;
  let connection: NatsConnection;
  let kv: KV;

  beforeAll(async () => {
    const dir = tempDir();
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    server = new NatsServerSupervisor({
      name: "kv-puts", dataDir: dir, monitor: { host: "127.0.0.1", port: monitor }, log: silentLogger(),
      configText: renderHubConfig({ serverName: "kv-puts", storeDir: join(dir, "js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }),
    });
    await server.start();
    url = `nats://127.0.0.1:${client}`;
    connection = await connect({ servers: url });
    kv = await new Kvm(connection).create("puts", { history: 1, maxValueSize: 1024 });
  }, 60_000);

  afterAll(async () => {
    await connection?.close();
    await server?.stop();
  });

  it("stores 5,000 values with 500 in flight, each revision the one KV reports, in the order they were put", async () => {
    const puts = new KvPuts({ connection, bucket: "puts" });
    const values = Array.from({ length: 5_000 }, (_, index) => [`key.${index % 2_500}`, new TextEncoder().encode(`value ${index}`)] as const);
    const revisions: number[] = [];
    for (let start = 0; start < values.length; start += 500) {
      revisions.push(...(await Promise.all(values.slice(start, start + 500).map(([key, value]) => puts.put(key, value)))));
    }
    expect(puts.inFlight).toBe(0);
    // One connection keeps publish order: revisions rise with the puts, the second put of a key wins.
    expect(revisions.every((revision, index) => index === 0 || revision > revisions[index - 1])).toBe(true);
    for (const index of [0, 1_234, 2_499]) {
      const entry = await kv.get(`key.${index}`);
      expect(entry?.string()).toBe(`value ${index + 2_500}`);
      expect(entry?.revision).toBe(revisions[index + 2_500]);
    }
    puts.close();
  }, 30_000);

  it("rejects a put JetStream refuses, with JetStream's reason, and keeps serving the others", async () => {
    const puts = new KvPuts({ connection, bucket: "puts" });
    const [refused, stored] = await Promise.allSettled([puts.put("big", new Uint8Array(4_096)), puts.put("small", new TextEncoder().encode("ok"))]);
    expect(refused.status).toBe("rejected");
    expect((refused as PromiseRejectedResult).reason.message).toMatch(/putting big into KV puts failed: JetStream refused it: .*message size exceeds maximum allowed/);
    expect(stored.status).toBe("fulfilled");
    expect((await kv.get("small"))?.string()).toBe("ok");
    puts.close();
  });

  it("rejects a put into a bucket that does not exist: no stream answers", async () => {
    const puts = new KvPuts({ connection, bucket: "missing" });
    await expect(puts.put("key", new Uint8Array(1))).rejects.toThrow(/putting key into KV missing failed: no stream answered/);
    puts.close();
  });

  it("rejects a put nobody acks within its timeout, and every put in flight when the connection closes", async () => {
    const own = await connect({ servers: url });
    // A listener that is no stream: the server sees a subscriber (no 503), and no ack ever comes.
    const silent = own.subscribe("$KV.silent.>");
    await own.flush();
    const quick = new KvPuts({ connection: own, bucket: "silent", timeoutMs: 300 });
    await expect(quick.put("key", new Uint8Array(1))).rejects.toThrow(/no answer from JetStream within 300 ms/);
    expect(quick.inFlight).toBe(0);
    const slow = new KvPuts({ connection: own, bucket: "silent", timeoutMs: 60_000 });
    const pending = [slow.put("a", new Uint8Array(1)), slow.put("b", new Uint8Array(1))];
    silent.unsubscribe();
    await own.close();
    for (const put of pending) await expect(put).rejects.toThrow(/KV silent puts closed/);
    expect(slow.closed).toBe(true);
    await expect(slow.put("c", new Uint8Array(1))).rejects.toThrow(/KV silent puts closed/);
  }, 20_000);
});
