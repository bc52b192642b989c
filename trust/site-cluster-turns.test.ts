/**
 * A site's bundle issued again where the three servers of a site cluster read it at once (one keys directory here;
 * in the field, one command copying DIR/sites/SITE/ to every server): they take it one at a time (roles/restart-turn.ts,
 * a turn in the site's own domain), each once the one before is ready again, so the site keeps two of its three
 * servers, and its agents a server to attach to, throughout. Before, all three started again together.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../test/support/ports.ts";
import { startHubProcess, startSiteCluster, stopAllProcesses, tempDir, type HubProcess, type SiteProcess, runCliOk as cli } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { restartedInPlaceAt, restartsInOrder } from "../test/support/log-lines.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { issueSite } from "./site-store.ts";

let keys: string;
let hub: HubProcess;
let servers: SiteProcess[];

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-site-turns-"), "keys");
  // As `leafmesh keys init`, `keys issue` and `keys issue-site` make them (the same functions, without a CLI process
  // each); the bundle issued again under test goes through `keys issue-site --hub`.
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  await issueSite({ dir: keys, site: "shop", servers: ["s1", "s2", "s3"], members: ["edge-a"] });
  hub = await startHubProcess({ name: "hub-1", keys });
  servers = await startSiteCluster({ site: "shop", servers: ["s1", "s2", "s3"], upstreams: [hub.leafUrl], keys });
}, 150_000);

afterAll(() => stopAllProcesses());

describe("a site cluster's bundle issued again", () => {
  it("is taken by the three servers one at a time, each in place", async () => {
    const pids = servers.map((server) => server.child.pid);
    await cli("keys", "issue-site", "--dir", keys, "--site", "shop", "--servers", "s1,s2,s3", "--members", "edge-a,edge-b", "--hub", hub.clientUrl.replace("nats://", "tls://"));
    await eventually(() => {
      const seen = servers.map(restartedInPlaceAt);
      return seen.every((time) => time !== undefined) ? (seen as number[]) : undefined;
    }, 120_000, "every site server to start again").catch((error: Error) => {
      throw new Error(`${error.message}\n${servers.map((server) => `--- ${server.name}\n${server.output().split("\n").filter((line) => /trust|turn|ready|lease|"level":[45]0/.test(line)).slice(-12).join("\n")}`).join("\n")}`);
    });
    const story = () => servers.map((server) => `--- ${server.name}\n${server.output().split("\n").filter((line) => /turn|stopping|ready|"level":[45]0/.test(line)).slice(-20).join("\n")}`).join("\n");
    // Each after the one before was ready again (its nats-server answering /healthz, JetStream current) and gave the turn back.
    await eventually(() => servers.every((server) => server.output().includes("gave back the turn to start again")) || undefined, 60_000, "every site server to give its turn back").catch((error: Error) => {
      throw new Error(`${error.message}\n${story()}`);
    });
    const restarts = restartsInOrder(servers, "site ready");
    for (let index = 1; index < restarts.length; index++) {
      expect(restarts[index - 1].readyAgainAt, story()).toBeLessThanOrEqual(restarts[index].restartedAt);
    }
    for (const server of servers) expect(server.output()).toMatch(/waiting for this site server's turn to start again: one site server of a cluster at a time/);
    expect(servers.map((server) => server.child.pid)).toEqual(pids);
    // All three back.
    for (const server of servers) {
      const view = await eventually(() => server.view().catch(() => undefined), 60_000, `${server.name} to answer status again`);
      expect(view.status.role).toBe("site");
      expect(server.child.exitCode).toBeNull();
    }
  }, 200_000);
});
