/**
 * A site's bundle issued again on a live mesh (`keys issue-site` with one more member), where the site server runs
 * from it: the server takes it by itself, starting again in place (the same process), and holds one leaf remote
 * more at the hub, the new member's. Before, a member added to a site needed its servers restarted by hand.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, freePort } from "../test/support/ports.ts";
import { launch, startHubProcess, stopAllProcesses, tempDir, type HubProcess, type LeafmeshProcess, runCliOk as cli } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";

let keys: string;
let hub: HubProcess;
let site: LeafmeshProcess;

/** The hub's leaf connections (all of them the site's: no agent attaches to the hub here), by account. */
async function siteLeafAccounts(): Promise<string[]> {
  const body = (await (await fetch(`http://127.0.0.1:${hub.monitorPort}/leafz`)).json()) as { leafs?: { account: string }[] };
  return (body.leafs ?? []).map((leaf) => leaf.account).sort();
}

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-site-bundle-"), "keys");
  await cli("keys", "init", "--dir", keys);
  for (const node of ["edge-a", "edge-b"]) await cli("keys", "issue", "--dir", keys, "--node", node);
  await cli("keys", "issue-site", "--dir", keys, "--site", "shop", "--members", "edge-a");
  hub = await startHubProcess({ name: "hub-1", keys });
  const ports = { client: await freePort(), leaf: await freePort(), monitor: await freePort() };
  site = launch("shop", [
    "site", "--name", "shop", "--data", tempDir("leafmesh-shop-"), "--upstream", hub.leafUrl.replace("nats://", "tls://"),
    "--listen", `127.0.0.1:${ports.client}`, "--leaf-listen", `127.0.0.1:${ports.leaf}`, "--monitor-listen", `127.0.0.1:${ports.monitor}`,
    "--metrics-listen", "off", "--keys", keys,
  ], `nats://127.0.0.1:${ports.client}`, "");
  // mesh (as the server's node account), edge-a, SYS
  await eventually(async () => ((await siteLeafAccounts()).length === 3 ? true : undefined), 30_000, "the site's three remotes").catch((error: Error) => {
    throw new Error(`${error.message}\n${site.output().slice(-3000)}`);
  });
}, 120_000);

afterAll(() => stopAllProcesses());

describe("a site's bundle issued again", () => {
  it("with a member added, is taken by the running site server, which then holds a remote for it", async () => {
    const before = await siteLeafAccounts();
    const pid = site.child.pid;
    await cli("keys", "issue-site", "--dir", keys, "--site", "shop", "--members", "edge-a,edge-b", "--hub", hub.clientUrl.replace("nats://", "tls://"));
    await eventually(() => /keys replaced on disk: stopping, and starting again in place with them/.test(site.output()) || undefined, 20_000, "the site server to take its new bundle");
    await eventually(async () => ((await siteLeafAccounts()).length === 4 ? true : undefined), 30_000, "the site's four remotes").catch((error: Error) => {
      throw new Error(`${error.message}\n${site.output().slice(-3000)}`);
    });
    const after = await siteLeafAccounts();
    expect(after.filter((account) => !before.includes(account))).toHaveLength(1);
    expect(site.child.pid).toBe(pid);
    expect(site.child.exitCode).toBeNull();
  }, 90_000);
});
