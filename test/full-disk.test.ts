/**
 * An agent whose data directory's file system fills up (an edge box's SD card
 * full of logs). On nats-server 2.9.10 the store of the node's catalog mirror
 * then stops answering, and stays so after space comes back: the catalog
 * stopped following the hub, `status` went unanswered, and the log said only
 * that a mirror check timed out, every 30 s, for ever. The agent now says the
 * file system is nearly full, restarts its nats-server once its JetStream has
 * been silent a while, and the catalog follows the hub again once there is room.
 * Real: a 2 MiB tmpfs (root, as the lab tests), a real hub, agent and servers.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { afterAll, describe, expect, it } from "vitest";
import { catalogKey, encodeCatalogObject } from "../bus/catalog.ts";
import { buckets } from "../bus/subjects.ts";
import { createLogger } from "../lib/log.ts";
import { service } from "./support/dns-catalog.ts";
import { eventually } from "./support/ports.ts";
import { startInProcessMesh } from "./support/in-process-mesh.ts";

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Writes into `path` until the file system is full. */
function fill(path: string): void {
  const chunk = Buffer.alloc(64 * 1024, 7);
  for (let index = 0; index < 10_000; index++) {
    try {
      writeFileSync(join(path, `filler-${index}`), chunk);
    } catch {
      // A last smaller piece takes what is left.
      try {
        writeFileSync(join(path, `filler-last`), Buffer.alloc(4 * 1024, 7));
      } catch {
        return;
      }
    }
  }
}

describe("an agent whose data directory fills up", () => {
  it("says so, restarts its silent nats-server, and follows the hub again once there is room", async () => {
    if (process.getuid?.() !== 0) throw new Error("this test mounts a tmpfs: run it as root");
    const mount = mkdtempSync(join(tmpdir(), "leafmesh-full-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mount]);
    cleanups.push(() => {
      execFileSync("umount", ["-l", mount]);
      rmSync(mount, { recursive: true, force: true });
    });
    const lines: string[] = [];
    const log = createLogger({ level: "info", destination: new Writable({ write: (chunk, _encoding, callback) => (lines.push(chunk.toString()), callback()) }) });
    const mesh = await startInProcessMesh({ agentDataDir: join(mount, "agent"), agentLog: log, storeWatch: { intervalMs: 500, timeoutMs: 1_000, restartAfter: 3, lowSpaceBytes: 1024 * 1024 } });
    cleanups.push(() => mesh.stop());
    const writer = await connect({ servers: mesh.hubClientUrl });
    cleanups.push(() => writer.close());
    const kv = await new Kvm(writer).create(buckets.catalog, { history: 1 });
    const first = service("shop", "first", { clusterIPs: ["10.96.0.1"] });
    await kv.put(catalogKey(first), encodeCatalogObject(first));
    await eventually(() => mesh.agent.controller.index.size === 1, 20_000, "the first service at the agent");

    fill(mount);
    const more = Array.from({ length: 300 }, (_, index) => service("shop", `svc-${index}-${"x".repeat(40)}`, { clusterIPs: [`10.96.${1 + Math.floor(index / 250)}.${(index % 250) + 1}`] }));
    for (const object of more) await kv.put(catalogKey(object), encodeCatalogObject(object));
    await eventually(() => lines.some((line) => line.includes("the file system of the data directory has")), 20_000, "the low-space warning");
    await eventually(() => lines.some((line) => line.includes("has not answered") && line.includes("free some space")), 60_000, "the restart of the silent server");
    expect(mesh.agent.controller.index.size).toBeLessThan(1 + more.length);

    for (const name of execFileSync("ls", [mount], { encoding: "utf8" }).split("\n")) if (name.startsWith("filler")) rmSync(join(mount, name));
    await eventually(() => mesh.agent.controller.index.size === 1 + more.length, 90_000, "the whole catalog at the agent once there is room");
  }, 180_000);
});
