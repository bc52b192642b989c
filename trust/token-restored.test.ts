/**
 * A revoked join token and a keys directory restored from a backup made before the revocation, with real
 * processes: a `leafmesh hub --enrol`, `leafmesh keys token` and `keys revoke --token --hub` through the CLI,
 * the directory put back as it was, the enrolling hub restarted on it (its own data directory, so its
 * resolver, kept), and a node joining with the token. Before, the token lived only in state.json: the
 * restored directory had it active, the hub enrolled the node, and nothing was said. Now its NATS user is
 * revoked in the enrol account at the hubs: the join is refused, the hub's log says which token and when,
 * and the restarted hub takes the revocation back into state.json. A token not revoked still enrols.
 */
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHubProcess, stopAllProcesses, tempDir, type HubProcess, runCliOk } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { joinMesh } from "./join.ts";
import { initKeys, readKeyState } from "./key-store.ts";
import { silentLogger } from "../lib/log.ts";

let base: string;
let keys: string;
let hub: HubProcess;

const clientUrl = () => `tls://127.0.0.1:${new URL(hub.clientUrl).port}`;
const tokenIdOf = (token: string) => (JSON.parse(Buffer.from(token.slice("lmjoin1.".length), "base64url").toString()) as { id: string }).id;
const join1 = (token: string, node: string) => joinMesh({ token, node, bundleDir: join(base, "joins", node), log: silentLogger(), retryForMs: 60_000 });

beforeAll(async () => {
  requireTools();
  base = tempDir("leafmesh-token-restored-");
  keys = join(base, "keys");
  // As `leafmesh keys init` makes them (the same function, without a CLI process).
  await initKeys({ dir: keys });
  hub = await startHubProcess({ name: "hub-1", keys, extraArgs: ["--enrol"] });
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
});

describe("a revoked join token and a keys directory restored from before the revocation", () => {
  it("stays revoked: the join is refused, the hub says why, and the token is revoked in state.json again", async () => {
    const revoked = (await runCliOk("keys", "token", "--dir", keys, "--url", clientUrl(), "--uses", "5")).trim();
    const kept = (await runCliOk("keys", "token", "--dir", keys, "--url", clientUrl(), "--uses", "5")).trim();
    const revokedId = tokenIdOf(revoked);
    const keptId = tokenIdOf(kept);

    // The backup, taken while both tokens are active (cp -a keeps the 0600 modes the hub checks).
    const backup = join(base, "backup");
    execFileSync("cp", ["-a", keys, backup]);

    const said = await runCliOk("keys", "revoke", "--dir", keys, "--token", revokedId, "--hub", clientUrl());
    expect(said).toMatch(new RegExp(`token ${revokedId} revoked at`));
    expect(said).toMatch(/pushed account A\w+ to hub hub-1/);
    await expect(join1(revoked, "edge-r0")).rejects.toThrow(/token \w+ was revoked|the token was revoked/);
    // The enrol account pushed to the running hub leaves its enrolment service serving: another token enrols at once.
    await join1(kept, "edge-k0");
    expect(readKeyState(keys).nodes["edge-k0"]?.enrolledBy).toBe(keptId);

    // The directory put back as the backup had it, and the enrolling hub restarted on it.
    await hub.stop();
    rmSync(keys, { recursive: true, force: true });
    execFileSync("cp", ["-a", backup, keys]);
    expect(readKeyState(keys).tokens![revokedId].revokedAt).toBeUndefined();
    hub = await hub.restart();

    const refused = await join1(revoked, "edge-r1").then(() => undefined, (error: Error) => error);
    expect(refused?.message, "the join with the revoked token was refused").toMatch(/the hub refused the token's credentials \(the token was revoked/);
    expect(readKeyState(keys).nodes["edge-r1"]).toBeUndefined();
    // The hub says which token and when: the node itself hears only "Authorization Violation".
    expect(hub.output()).toMatch(new RegExp(`credentials of join token ${revokedId} \\(user U\\w+\\) were revoked at \\S+: that token enrols nothing`));
    expect(hub.output()).toMatch(new RegExp(`the hubs hold the revocation of join token ${revokedId} .* lacked \\(restored from a backup\\?\\): taken back into state.json`));
    expect(readKeyState(keys).tokens![revokedId].revokedAt).toBeDefined();
    expect(await runCliOk("keys", "tokens", "--dir", keys)).toMatch(new RegExp(`${revokedId}\\s+revoked`));

    // The other token of the same backup enrols as before.
    const joined = await join1(kept, "edge-k1");
    expect(joined.bundleDir).toContain("edge-k1");
    expect(readKeyState(keys).nodes["edge-k1"]?.enrolledBy).toBe(keptId);
  }, 240_000);
});
