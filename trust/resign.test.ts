/**
 * Keys an older leafmesh made: their node accounts lack the `$JS.API.INFO`
 * import (trust/claims.ts `jetStreamInfoApi`), through which nats-server 2.9.10
 * let a stolen node purge the mesh's JetStream. A hub started with them says
 * so; `leafmesh keys resign --hub` signs every account again and pushes it, and
 * the purge is refused from then on, without a restart.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { decode, encodeAccount, type Account, type Algorithms } from "@nats-io/jwt";
import { jetstreamManager } from "@nats-io/jetstream";
import { startHubProcess, stopAllProcesses, tempDir, type HubProcess, runCliOk as cli } from "../test/support/processes.ts";
import { eventually } from "../test/support/ports.ts";
import { jetStreamInfoApi } from "./claims.ts";
import { initKeys, readKeyState } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { connectRogueLeaf } from "../test/support/rogue-leaf.ts";
import { requireTools } from "../test/support/trust-servers.ts";

let keys: string;
let hub: HubProcess;

/** Signs edge-a's account again as leafmesh did before: without the `$JS.API.INFO` import. */
async function signAsBefore(node: string): Promise<void> {
  const file = join(keys, "accounts", `node-${node}.jwt`);
  const claims = decode<Account>(readFileSync(file, "utf8").trim());
  const { iss: _iss, jti: _jti, iat: _iat, sub: _sub, name, nats } = claims;
  const { type: _type, version: _version, ...account } = nats as Account & { type?: string; version?: number };
  const jwt = await encodeAccount(
    name,
    readFileSync(join(keys, "accounts", `node-${node}.seed`), "utf8").trim(),
    { ...account, imports: account.imports?.filter((entry) => entry.subject !== jetStreamInfoApi) },
    { algorithm: "ed25519-nkey" as Algorithms, signer: readFileSync(join(keys, "operator.seed"), "utf8").trim() },
  );
  writeFileSync(file, jwt);
}

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-resign-"), "keys");
  // As `leafmesh keys init` and `keys issue` make them (the same functions, without a CLI process each).
  await initKeys({ dir: keys });
  await issueNode({ dir: keys, node: "edge-a" });
  await signAsBefore("edge-a");
  hub = await startHubProcess({ name: "hub-1", keys });
}, 90_000);

afterAll(() => stopAllProcesses());

describe("keys an older leafmesh signed", () => {
  it("the hub warns at start, and `keys resign --hub` closes the hole on the running hub", async () => {
    expect(hub.output()).toContain("the mesh's keys were signed by an older leafmesh (1 accounts)");
    const output = await cli("keys", "resign", "--dir", keys, "--hub", hub.clientUrl);
    expect(output).toMatch(/2 accounts signed again/);
    expect(output).toMatch(/pushed account A\w+ to hub hub-1/);

    const jsm = await jetstreamManager(await hub.connection());
    const bundle = join(keys, "nodes", "edge-a");
    const rogue = await connectRogueLeaf({ port: Number(new URL(hub.leafUrl).port), creds: join(bundle, "node.creds"), cert: join(bundle, "node.crt"), key: join(bundle, "node.key"), ca: join(bundle, "ca.crt") });
    try {
      rogue.subscribe("_INBOX_edge-a.>");
      rogue.publish(`$JS.hub.API.ACCOUNT.PURGE.${readKeyState(keys).meshAccount}`, "", "_INBOX_edge-a.purge");
      // an allowed call after it, answered: the purge request was handled (or dropped) before
      rogue.publish("$JS.hub.API.STREAM.INFO.KV_mesh-nodes", "", "_INBOX_edge-a.after");
      await eventually(() => rogue.received.some((message) => message.subject === "_INBOX_edge-a.after"), 10_000, "the allowed call's answer");
      expect(rogue.received.filter((message) => message.subject === "_INBOX_edge-a.purge")).toEqual([]);
      const names: string[] = [];
      for await (const name of jsm.streams.names()) names.push(name);
      expect(names.sort()).toEqual(["KV_mesh-catalog", "KV_mesh-nodes", "KV_mesh-revocations"]);
    } finally {
      rogue.close();
    }
  });
});
