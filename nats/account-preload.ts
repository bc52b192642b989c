/**
 * Makes a secured nats-server 2.9.10 resolve every account of the mesh at start,
 * one after the other, before it accepts or solicits any connection.
 *
 * Why: in operator mode nats-server builds an account lazily, the first time a
 * connection or an import needs it (`fetchAccount` in server/server.go). Two
 * goroutines that need one account at once both build it; one copy is
 * registered, and an account whose imports were resolved meanwhile may keep the
 * other copy (`updateAccountClaimsWithRefresh` takes it from `tmpAccounts`).
 * Interest on that import then goes into the lost copy: nats-server logs
 * "Creating import subscription" and sends nothing to the leaf connections of the
 * registered account, so that node's relay frames to the importer never leave its
 * server, for as long as both run. A site's remotes (one per account) and a hub's
 * reconnecting leafs start many such lookups at once; measured in trust/site.test.ts
 * (one run in three under load). Two copies of the mesh account also raced on its
 * JetStream store directory ("could not create storage streams directory").
 *
 * How: when JetStream starts (before the leafnode accept loop and remotes), it
 * looks up every account that has a directory in the store (`configAllJetStreamAccounts`
 * in server/jetstream.go), in one goroutine; empty directories are removed first,
 * so each gets a small marker file. Markers of accounts that left the mesh are
 * removed; an account's own JetStream files are never touched.
 *
 * ```ts
 * markAccountsForLoadAtStart(join(dataDir, "jetstream"), security.accounts);
 * ```
 */
import { existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LeafmeshError } from "../lib/errors.ts";
import { makeDirectories } from "../lib/make-dirs.ts";

export const loadAtStartMarker = "leafmesh-load-at-start";

/** `storeDir` is the config's `jetstream.store_dir`; nats-server keeps accounts under its `jetstream/`. */
export function markAccountsForLoadAtStart(storeDir: string, accounts: readonly string[]): void {
  const root = join(storeDir, "jetstream");
  makeDirectories(root);
  const wanted = new Set(accounts);
  for (const account of wanted) {
    if (!/^A[A-Z2-7]{55}$/.test(account)) throw new LeafmeshError("CONFIG_INVALID", `not an account public key: '${account}' (expected A followed by 55 base32 characters)`);
    makeDirectories(join(root, account));
    writeFileSync(join(root, account, loadAtStartMarker), "leafmesh: nats-server looks this account up at start (nats-config/account-preload.ts)\n");
  }
  for (const entry of readdirSync(root, { withFileTypes: true })) {
    if (!entry.isDirectory() || wanted.has(entry.name)) continue;
    const dir = join(root, entry.name);
    if (!existsSync(join(dir, loadAtStartMarker))) continue;
    rmSync(join(dir, loadAtStartMarker));
    // Only when nothing else is left: a JetStream account keeps its streams.
    if (readdirSync(dir).length === 0) rmSync(dir, { recursive: true });
  }
}
