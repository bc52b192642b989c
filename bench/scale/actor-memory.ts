/**
 * Memory per actor in a loaded agent (issue 17, "Memory"): the fabric scenario's
 * agent (controller, DNS, traffic, proxier without interception) holds a catalog
 * of `services`; then a heap snapshot of it (`--heapsnapshot-signal`) is read
 * for the memory each actor alone keeps alive (bench/profile/heap-owners.ts:
 * dominators), beside the process's RSS and its nats-server's.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { nodeBinary } from "../../test/support/processes.ts";
import { normalisedCatalog } from "../fabric/catalog.ts";
import { measureLeafmesh } from "../fabric/scenario.ts";
import { rssMiB } from "../fabric/process-stats.ts";
import type { OwnerMemory } from "../profile/heap-owners.ts";

export interface ActorMemory {
  services: number;
  rssMiB: number;
  serverRssMiB: number;
  heapMiB: number;
  owners: OwnerMemory[];
}

export async function measureActorMemory(services: number): Promise<ActorMemory> {
  const dir = mkdtempSync(join(tmpdir(), "leafmesh-heap-"));
  const previous = process.env.NODE_OPTIONS;
  process.env.NODE_OPTIONS = `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${dir}`;
  let rssAtSnapshot = NaN;
  try {
    const result = await measureLeafmesh(services, normalisedCatalog(services), 20, {
      onLoaded: async (pid) => {
        delete process.env.NODE_OPTIONS; // only the processes started before
        rssAtSnapshot = rssMiB(pid);
        process.kill(pid, "SIGUSR2");
        // Written while the agent is paused: done once its size holds still (bounded: 5 minutes).
        let last = -1;
        for (let stable = 0, polls = 0; stable < 3; polls++) {
          if (polls > 600) throw new Error("the agent's heap snapshot never finished");
          await new Promise((done) => setTimeout(done, 500));
          const file = readdirSync(dir).find((name) => name.endsWith(".heapsnapshot"));
          const size = file ? statSync(join(dir, file)).size : -1;
          stable = size > 0 && size === last ? stable + 1 : 0;
          last = size;
        }
      },
    });
    const file = join(dir, readdirSync(dir).find((name) => name.endsWith(".heapsnapshot"))!);
    const script = resolve(import.meta.dirname, "../profile/heap-owners.ts");
    const analysis = JSON.parse(execFileSync(nodeBinary, ["--max-old-space-size=8192", script, file, "--json"], { encoding: "utf8", maxBuffer: 16 * 1024 * 1024 })) as { total: number; owners: OwnerMemory[] };
    return { services, rssMiB: rssAtSnapshot, serverRssMiB: result.serverRssMiB, heapMiB: analysis.total / 1048576, owners: analysis.owners };
  } finally {
    if (previous === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = previous;
    rmSync(dir, { recursive: true, force: true });
  }
}
