/**
 * The revocation list over a mesh's years. Every `keys revoke` and `keys issue --rotate` adds a certificate to it and
 * nothing took one off: signed, it must fit one NATS message (the hubs' max_payload, 1 MiB: about 5,900 entries), and a
 * hub started from a keys directory whose list did not fit died at start ("unexpected error: 'payload' max_payload size
 * exceeded"), measured with a real `leafmesh hub`. Now certificates leave the list 30 days after they end (their end as
 * recorded, or 825 days after their revocation at the latest), and a list the hubs cannot take is said while the hub
 * runs on. The years are handed in as data: a state.json whose revocations were made 900 days ago, as `keys revoke`
 * writes them.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import { buckets, revocationListKey } from "../bus/subjects.ts";
import { runCli, startHubProcess, stopAllProcesses, tempDir, type HubProcess, runCliOk } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys, readKeyState } from "./key-store.ts";
import { endedKeptMs, longestCertificateLifeMs, pruneEnded, signRevocationList, verifyRevocationList, type RevocationList } from "./revocation-list.ts";
import { issueNode } from "./node-credentials.ts";

const day = 86_400_000;
/** A well-formed fingerprint for entry `index` (no real certificate behind it: these ended long ago). */
const fingerprint = (index: number) => Array.from({ length: 32 }, (_, byte) => (byte < 4 ? (index >> (8 * byte)) & 0xff : (byte * 37) & 0xff).toString(16).padStart(2, "0").toUpperCase()).join(":");

describe("which revoked certificates stay on the list", () => {
  it("those not ended 30 days ago: by their recorded end, else 825 days after their revocation", () => {
    const now = Date.parse("2029-06-01T00:00:00Z");
    const entry = (index: number, at: number, ends?: number): RevocationList["revoked"][number] => ({ node: `edge-${index}`, certificate: fingerprint(index), at: new Date(at).toISOString(), ...(ends !== undefined ? { ends: new Date(ends).toISOString() } : {}) });
    const kept = pruneEnded(
      [
        entry(1, now - 10 * day, now + 100 * day), // revoked lately, ends later
        entry(2, now - 100 * day, now - 29 * day), // ended 29 days ago: kept for clocks that are behind
        entry(3, now - 100 * day, now - 31 * day), // ended 31 days ago
        entry(4, now - longestCertificateLifeMs - endedKeptMs + day), // no end recorded: may still run
        entry(5, now - longestCertificateLifeMs - endedKeptMs - day), // no end recorded: ended for sure
      ],
      now,
    );
    expect(kept.map((revoked) => revoked.node)).toEqual(["edge-1", "edge-2", "edge-4"]);
  });
});

describe("hub --node-cert-validity", () => {
  it("is refused beyond 825 days, before anything is written: the list counts on no certificate lasting longer", async () => {
    const data = tempDir("leafmesh-list-size-cli-");
    const result = await runCli(["hub", "--name", "hub-x", "--data", join(data, "d"), "--insecure", "--enrol", "--node-cert-validity", "900d"]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("--node-cert-validity 900d: at most 825d");
  });
});

let base: string;
let keys: string;
let hub: HubProcess;

beforeAll(async () => {
  requireTools();
  base = tempDir("leafmesh-list-size-");
  keys = join(base, "keys");
  // As `leafmesh keys init` and `keys issue` make them (the same functions, without a CLI process each).
  await initKeys({ dir: keys });
  await issueNode({ dir: keys, node: "edge-a" });
  // Years of revocations, as an older leafmesh left them: 6,000 entries made 900 days ago, list and state.json alike.
  const at = new Date(Date.now() - 900 * day).toISOString();
  const revoked = Array.from({ length: 6_000 }, (_, index) => ({ node: `edge-old-${index}`, certificate: fingerprint(index), at }));
  const state = readKeyState(keys);
  state.revokedCertificates = revoked;
  state.revocationVersion = 6_000;
  writeFileSync(join(keys, "state.json"), JSON.stringify(state, null, 2));
  writeFileSync(join(keys, "hub", "revocations.json"), signRevocationList({ version: 6_000, issuedAt: at, revoked }, readFileSync(join(keys, "ca", "ca.key"), "utf8")));
}, 60_000);

afterAll(async () => {
  await stopAllProcesses();
});

describe("a revocation list grown over years", () => {
  it("does not stop a hub from starting, and the next revocation drops the certificates that ended", async () => {
    expect(readFileSync(join(keys, "hub", "revocations.json")).length).toBeGreaterThan(1_048_576);
    hub = await startHubProcess({ name: "hub-1", keys });
    expect(hub.output()).toMatch(/the keys directory's revocation list was not published: the signed revocation list \(version 6000, 6000 certificates\) is \d+ bytes, more than the \d+ a hub takes in one message/);

    const said = await runCliOk("keys", "revoke", "--dir", keys, "--node", "edge-a", "--hub", `tls://127.0.0.1:${new URL(hub.clientUrl).port}`);
    expect(said).toMatch(/revocation list version 6001 published to the hubs/);
    const state = readKeyState(keys);
    expect(state.revokedCertificates?.map((entry) => entry.node)).toEqual(["edge-a"]);
    // Its end is recorded with it: it leaves the list 30 days after.
    expect(Date.parse(state.revokedCertificates![0].ends!)).toBeGreaterThan(Date.now());

    const connection = await hub.connection();
    const held = await (await new Kvm(connection).open(buckets.revocations)).get(revocationListKey);
    const list = verifyRevocationList(held!.value, readFileSync(join(keys, "ca", "ca.crt"), "utf8"));
    expect(list.version).toBe(6_001);
    expect(list.revoked.map((entry) => entry.node)).toEqual(["edge-a"]);
  }, 120_000);
});
