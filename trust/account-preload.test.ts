/**
 * A secured hub or site resolves every account of the mesh at start, before any
 * connection (nats-config/account-preload.ts): lazily, nats-server 2.9.10 could
 * build one account twice when several connections needed it at once, and
 * import interest then went into the copy nobody used (a site member's relay
 * frames to a node at the hub never left the site). Real nats-server processes,
 * started through the supervisor as `leafmesh hub --keys` starts them.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NatsServerSupervisor } from "../nats/supervisor.ts";
import { loadAtStartMarker, markAccountsForLoadAtStart } from "../nats/account-preload.ts";
import { renderHubConfig } from "../nats/render.ts";
import { silentLogger } from "../lib/log.ts";
import { freePort } from "../test/support/ports.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { loadHubSecurity } from "./security.ts";
import { requireTools } from "../test/support/trust-servers.ts";

const base = mkdtempSync(join(tmpdir(), "leafmesh-account-preload-"));
const servers: NatsServerSupervisor[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  rmSync(base, { recursive: true, force: true });
});

const accountA = `A${"B".repeat(55)}`;
const accountB = `A${"C".repeat(55)}`;

async function registeredAccounts(monitorPort: number): Promise<string[]> {
  const body = (await (await fetch(`http://127.0.0.1:${monitorPort}/accountz`)).json()) as { accounts: string[] };
  return body.accounts;
}

describe("accounts resolved at start", () => {
  it("marks each account's store directory, removes markers of accounts that left, and leaves JetStream files alone", () => {
    const store = join(base, "unit");
    markAccountsForLoadAtStart(store, [accountA, accountB]);
    expect(readdirSync(join(store, "jetstream")).sort()).toEqual([accountA, accountB]);
    expect(readdirSync(join(store, "jetstream", accountA))).toEqual([loadAtStartMarker]);
    // accountB has streams of its own when it leaves: they stay; accountA's directory goes.
    mkdirSync(join(store, "jetstream", accountB, "streams", "KV_x"), { recursive: true });
    writeFileSync(join(store, "jetstream", accountB, "streams", "KV_x", "meta.inf"), "{}");
    markAccountsForLoadAtStart(store, []);
    expect(existsSync(join(store, "jetstream", accountA))).toBe(false);
    expect(readdirSync(join(store, "jetstream", accountB))).toEqual(["streams"]);
    // A directory that is not ours (no marker) is never removed.
    mkdirSync(join(store, "jetstream", "$SYS"), { recursive: true });
    markAccountsForLoadAtStart(store, [accountA]);
    expect(readdirSync(join(store, "jetstream")).sort()).toEqual(["$SYS", accountA, accountB].sort());
    expect(() => markAccountsForLoadAtStart(store, ["../../etc"])).toThrow("not an account public key: '../../etc'");
  });

  it("a secured hub knows every node's account before anything connects, also one issued before a restart", { timeout: 60_000 }, async () => {
    requireTools();
    const keys = join(base, "keys");
    await initKeys({ dir: keys });
    for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
    const dataDir = join(base, "hub");
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    const supervisor = () => {
      const security = loadHubSecurity(keys, { resolverDir: join(dataDir, "accounts") });
      const server = new NatsServerSupervisor({
        name: "hub",
        dataDir,
        monitor: { host: "127.0.0.1", port: monitor },
        log: silentLogger(),
        loadAccountsAtStart: { storeDir: join(dataDir, "jetstream"), accounts: security.accounts },
        configText: renderHubConfig({
          serverName: "hub",
          storeDir: join(dataDir, "jetstream"),
          client: { host: "127.0.0.1", port: client },
          leaf: { host: "127.0.0.1", port: leaf },
          monitor: { host: "127.0.0.1", port: monitor },
          security: security.configFragment,
          leafSecurity: security.leafnodesFragment,
        }),
      });
      servers.push(server);
      return { server, security };
    };
    const first = supervisor();
    expect(first.security.accounts).toHaveLength(3); // mesh, edge-a, edge-b (not the system account)
    await first.server.start();
    // Nothing has connected: lazily, only the system account would be known here.
    expect((await registeredAccounts(monitor)).sort()).toEqual(expect.arrayContaining(first.security.accounts));
    await first.server.stop();

    await issueNode({ dir: keys, node: "edge-c" });
    const second = supervisor();
    expect(second.security.accounts).toHaveLength(4);
    await second.server.start();
    expect(await registeredAccounts(monitor)).toEqual(expect.arrayContaining(second.security.accounts));
    await second.server.stop();
  });
});
