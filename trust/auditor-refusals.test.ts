/**
 * A hub run from a copy of the keys, as docs/trust.md says to run it (state.json, operator.jwt,
 * accounts/*.jwt and hub/), and a node revoked with `keys revoke --hub` on the mesh's keys
 * directory: the hub's auditor says the node's logins are refused because they were revoked (the
 * account pushed to its resolver holds it), not "valid" from its older copy; and it says so once a
 * minute, not at every attempt of the node's leaf (one a second).
 */
import { cpSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCliOk as cli, startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { eventually } from "../test/support/ports.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { loadHubSecurity } from "./security.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";

let keys: string;
let hubCopy: string;

beforeAll(async () => {
  requireTools();
  const base = tempDir("leafmesh-auditor-refusals-");
  keys = join(base, "keys");
  // As `leafmesh keys init` and `keys issue` make them (the same functions, without a CLI process each).
  await initKeys({ dir: keys });
  await issueNode({ dir: keys, node: "edge-a" });
  // The hub's copy: only what a hub needs (docs/trust.md, step 3).
  hubCopy = join(base, "hub-keys");
  mkdirSync(join(hubCopy, "accounts"), { recursive: true, mode: 0o700 });
  for (const file of ["state.json", "operator.jwt"]) cpSync(join(keys, file), join(hubCopy, file));
  for (const file of readdirSync(join(keys, "accounts")).filter((name) => name.endsWith(".jwt"))) cpSync(join(keys, "accounts", file), join(hubCopy, "accounts", file));
  cpSync(join(keys, "hub"), join(hubCopy, "hub"), { recursive: true });
}, 60_000);

afterAll(() => stopAllProcesses());

describe("the hub's auditor on a node revoked after the hub's keys were copied", () => {
  it("says the logins were revoked, once a minute", async () => {
    const hub = await startHubProcess({ name: "hub-1", keys: hubCopy });
    await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], keys: join(keys, "nodes", "edge-a"), extraArgs: ["--mdns", "off"] });
    // The refusals the auditor hears, heard here too through the hub's system user.
    const system = await connect({ ...loadHubSecurity(hubCopy, { resolverDir: join(hubCopy, "unused") }).systemConnectOptions, servers: hub.clientUrl });
    let refusals = 0;
    system.subscribe("$SYS.SERVER.*.CLIENT.AUTH.ERR", { callback: () => void refusals++ });
    await system.flush();
    try {
      await cli("keys", "revoke", "--dir", keys, "--node", "edge-a", "--hub", hub.clientUrl);
      await eventually(() => refusals >= 4, 30_000, "four refused logins of the revoked node");
      const said = hub.output().split("\n").filter((line) => line.includes("refused a connection from") && line.includes("'edge-a'"));
      expect(said).toHaveLength(1);
      expect(said[0]).toContain("credentials of node 'edge-a'");
      expect(said[0]).toContain("were revoked at");
      expect(said[0]).toContain("(pushed to this hub; its keys in");
      expect(said[0]).not.toContain("are valid in");
    } finally {
      await system.close();
    }
  });
});
