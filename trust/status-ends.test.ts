/**
 * `leafmesh status` shows when the certificate a hub or node runs with ends, and a node's NATS credentials issued
 * with --expires, and says it in the trust actor's state from 30 days before: an operator sees the end coming
 * without reading the logs (which say it once a day: trust/bundle-watch.ts). Before, only `keys list` on the keys
 * directory showed it.
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, runCliOk as cli } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";

let keys: string;
let hub: HubProcess;
let ending: AgentProcess;
let lasting: AgentProcess;
const credentialsEnd = new Date(Date.now() + 20 * 86_400_000 + 3_600_000);

const endOf = (file: string) => new Date(new X509Certificate(readFileSync(file)).validTo).toISOString();

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-status-ends-"), "keys");
  await cli("keys", "init", "--dir", keys);
  await cli("keys", "issue", "--dir", keys, "--node", "edge-a", "--expires", credentialsEnd.toISOString());
  await cli("keys", "issue", "--dir", keys, "--node", "edge-b");
  hub = await startHubProcess({ name: "hub-1", keys });
  const hubs = [hub.leafUrl.replace("nats://", "tls://")];
  [ending, lasting] = await Promise.all([startAgentProcess({ node: "edge-a", hubs, keys }), startAgentProcess({ node: "edge-b", hubs, keys })]);
}, 120_000);

afterAll(() => stopAllProcesses());

type Actor = { name: string; state: string; detail?: Record<string, unknown> };
async function trustActor(args: string[]): Promise<Actor | undefined> {
  const view = JSON.parse(await cli("status", "--json", "--keys", keys, ...args)) as { status: { actors: Actor[] } };
  return view.status.actors.find((actor) => actor.name === "trust");
}

describe("status shows when keys end", () => {
  it("a node's credentials that end within 30 days are its trust state, with both ends in the detail and the text", async () => {
    const trust = await trustActor(["--node", "edge-a", "--nats", ending.clientUrl]);
    expect(trust?.state).toBe("NATS credentials end in 20 days");
    expect(trust?.detail?.credentialsEnd).toBe(new Date(Math.floor(credentialsEnd.getTime() / 1000) * 1000).toISOString());
    expect(trust?.detail?.certificateEnds).toBe(endOf(join(keys, "nodes", "edge-a", "node.crt")));
    const text = await cli("status", "--keys", keys, "--node", "edge-a", "--nats", ending.clientUrl);
    const line = text.split("\n").find((row) => /\btrust\b/.test(row));
    expect(line).toContain("NATS credentials end in 20 days");
    expect(line).toContain(`certificate ends ${endOf(join(keys, "nodes", "edge-a", "node.crt")).slice(0, 10)}`);
    expect(line).toContain(`NATS credentials end ${credentialsEnd.toISOString().slice(0, 10)}`);
  });

  it("a node whose keys end later keeps its ordinary state, and shows its certificate's end", async () => {
    const trust = await trustActor(["--node", "edge-b", "--nats", lasting.clientUrl]);
    expect(trust?.state).toBe("no revocations");
    expect(trust?.detail?.certificateEnds).toBe(endOf(join(keys, "nodes", "edge-b", "node.crt")));
    expect(trust?.detail?.credentialsEnd).toBeUndefined();
  });

  it("a hub shows the end of the hubs' certificate", async () => {
    const trust = await trustActor(["--nats", hub.clientUrl]);
    expect(trust?.state).toBe("certificate valid");
    expect(trust?.detail?.certificateEnds).toBe(endOf(join(keys, "hub", "hub.crt")));
    const text = await cli("status", "--keys", keys, "--nats", hub.clientUrl);
    expect(text.split("\n").find((row) => /\btrust\b/.test(row))).toContain(`certificate ends ${endOf(join(keys, "hub", "hub.crt")).slice(0, 10)}`);
  });
});
