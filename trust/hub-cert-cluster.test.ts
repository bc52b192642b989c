/**
 * The hubs' certificate issued again where all three hubs of a cluster read it at once (one keys directory here; in
 * the field, one command copying hub/ to every hub): they take it one at a time (roles/restart-turn.ts), each once the
 * one before is ready again, so the cluster keeps two of three and its JetStream quorum throughout. Before, all three
 * restarted together.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../test/support/ports.ts";
import { startHubCluster, stopAllProcesses, tempDir, type HubProcess, runCliOk as cli } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { restartedInPlaceAt, restartsInOrder } from "../test/support/log-lines.ts";

let keys: string;
let hubs: HubProcess[];

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-hub-cert-cluster-"), "keys");
  await cli("keys", "init", "--dir", keys);
  hubs = await startHubCluster({ names: ["hub-1", "hub-2", "hub-3"], keys, leaseTtlMs: 3_000 });
}, 120_000);

afterAll(() => stopAllProcesses());

describe("keys hub-cert in a cluster", () => {
  it("the three hubs take the new certificate one at a time, each in place", async () => {
    const pids = hubs.map((hub) => hub.child.pid);
    await cli("keys", "hub-cert", "--dir", keys);
    await eventually(() => {
      const seen = hubs.map(restartedInPlaceAt);
      return seen.every((time) => time !== undefined) ? (seen as number[]) : undefined;
    }, 90_000, "every hub to start again").catch((error: Error) => {
      throw new Error(`${error.message}\n${hubs.map((hub) => `--- ${hub.name}\n${hub.output().split("\n").filter((line) => /trust|turn|ready|lease|"level":[45]0/.test(line)).slice(-12).join("\n")}`).join("\n")}`);
    });
    // What each hub said about its turn, its leases and its restart, for a failure to show why.
    const story = () => hubs.map((hub) => `--- ${hub.name}\n${hub.output().split("\n").filter((line) => /turn|lease|stopping|ready|"level":[45]0/.test(line)).slice(-20).join("\n")}`).join("\n");
    // Each after the one before was ready again (its nats-server answering /healthz, JetStream current) and gave the turn back.
    await eventually(() => hubs.every((hub) => hub.output().includes("gave back the turn to start again")) || undefined, 60_000, "every hub to give its turn back").catch((error: Error) => {
      throw new Error(`${error.message}\n${story()}`);
    });
    const restarts = restartsInOrder(hubs, "hub ready");
    for (let index = 1; index < restarts.length; index++) {
      expect(restarts[index - 1].readyAgainAt, story()).toBeLessThanOrEqual(restarts[index].restartedAt);
    }
    for (const hub of hubs) expect(hub.output()).toMatch(/waiting for this hub's turn to start again: one hub of a cluster at a time/);
    expect(hubs.map((hub) => hub.child.pid)).toEqual(pids);
    // All three back, and the cluster answers.
    await eventually(() => hubs.every((hub) => (hub.output().match(/"msg":"hub ready"/g)?.length ?? 0) >= 2) || undefined, 60_000, "every hub ready again");
    expect(JSON.parse(await cli("status", "--json", "--keys", keys, "--nats", hubs[0].clientUrl)).status.role).toBe("hub");
  }, 180_000);
});
