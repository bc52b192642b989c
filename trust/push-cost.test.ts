/**
 * What a push of account JWTs costs the hub's event loop. Every enrolment re-signs every account, and before
 * each push the hub reads back what its resolver holds and compares the revocations (trust/push.ts). A JWT
 * signature checked by @nats-io/jwt costs 8–15 ms of JavaScript: checking every account's JWTs at every push
 * stalled the hub for seconds when 16 nodes joined at once, past its publisher lease (bench/herd,
 * docs/limits.md "(b'')"). Counted here at the library's own signature check (a spy that calls through), so
 * the count is exact: a push checks only what it has not read before.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createAccount, fromPublic } from "@nats-io/jwt";
import { connect } from "@nats-io/transport-node";
import { initKeys, readKeyState } from "./key-store.ts";
import { issueNode, revokeNode } from "./node-credentials.ts";
import { pushAccountClaims } from "./push.ts";
import { listHeldAccounts, lookupAccountJwt } from "./hub-revocations.ts";
import { startSecuredHub, stopAllServers, requireTools, type SecuredHub } from "../test/support/trust-servers.ts";

let base: string;
beforeAll(() => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-push-cost-"));
});
afterAll(async () => {
  vi.restoreAllMocks();
  await stopAllServers();
  if (base) rmSync(base, { recursive: true, force: true });
});

/** Every Ed25519 signature check of @nats-io/nkeys (what @nats-io/jwt's decode does for each JWT). */
const signatureChecks = vi.spyOn(Object.getPrototypeOf(fromPublic(createAccount().getPublicKey())) as { verify(input: Uint8Array, signature: Uint8Array): boolean }, "verify");

/** A batch of joins, pushed as the enrolling hub does (trust/enrolment-service.ts): each new account first, then every account's last JWT. */
async function joinBatch(dir: string, hub: SecuredHub, nodes: string[]): Promise<number> {
  const created: string[] = [];
  const latest = new Map<string, string>();
  for (const node of nodes) {
    const { changedAccounts } = await issueNode({ dir, node });
    created.push(changedAccounts[0]);
    for (const jwt of changedAccounts) latest.set(JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString()).sub as string, jwt);
  }
  const before = signatureChecks.mock.calls.length;
  await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts: [...new Set([...created, ...latest.values()])], keysDir: dir });
  return signatureChecks.mock.calls.length - before;
}

describe("a push of the accounts of a batch of joins", () => {
  it("checks each JWT the hub holds once, and none it pushed itself or signed here", async () => {
    const dir = join(base, "keys");
    await initKeys({ dir });
    for (const node of ["edge-0", "edge-1", "edge-2", "edge-3", "edge-4", "edge-5"]) await issueNode({ dir, node });
    const hub = await startSecuredHub({ keysDir: dir, dir: join(base, "hub") });
    const system = await connect({ servers: hub.clientUrl, ...hub.security.systemConnectOptions });
    try {
      const heldAtStart = (await listHeldAccounts(system, 5_000)).size;

      // The hub holds what it preloaded from the keys directory: read from it, each checked once.
      const first = await joinBatch(dir, hub, ["join-0", "join-1", "join-2"]);
      expect(first).toBeLessThanOrEqual(heldAtStart);

      // The next batch, with a node revoked before it (its account, re-signed by the batch, carries the revocation): the
      // hub now holds what this process pushed, and all that is offered was signed here. Before, this checked ~3
      // signatures per account (~40 here, ~170 for a herd of 16 in a mesh of 20).
      await revokeNode({ dir, node: "edge-3" });
      const second = await joinBatch(dir, hub, ["join-3", "join-4", "join-5"]);
      expect(second).toBe(0);

      // And what was pushed is what the hub holds: the new nodes' accounts, and the revocation.
      const state = readKeyState(dir);
      for (const node of ["join-3", "join-5"]) expect(await lookupAccountJwt(system, state.nodes[node].account, 5_000)).toBeDefined();
      const held = await lookupAccountJwt(system, state.nodes["edge-3"].account, 5_000);
      const claims = JSON.parse(Buffer.from(held!.split(".")[1], "base64url").toString()) as { nats: { revocations?: Record<string, number> } };
      expect(Object.keys(claims.nats.revocations ?? {})).toEqual(Object.keys(state.nodes["edge-3"].revocations));
      expect(Object.keys(state.nodes["edge-3"].revocations).length).toBe(1);
    } finally {
      await system.close();
    }
  }, 60_000);
});
