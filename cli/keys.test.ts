import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { Writable } from "node:stream";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { runKeysCommand } from "./keys.ts";
import { loadHubSecurity, loadNodeSecurity } from "../trust/security.ts";
import { parsePsk } from "../services/tunnel/index.ts";
import { requireTools } from "../test/support/trust-servers.ts";

const base = mkdtempSync(join(tmpdir(), "leafmesh-keys-cli-"));
const dir = join(base, "keys");
afterAll(() => rmSync(base, { recursive: true, force: true }));

async function keys(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const sink = (append: (text: string) => void) =>
    new Writable({
      write(chunk, _encoding, done) {
        append(chunk.toString());
        done();
      },
    });
  const code = await runKeysCommand(argv, { stdout: sink((text) => (stdout += text)), stderr: sink((text) => (stderr += text)) }, {});
  return { code, stdout, stderr };
}

function everyFile(root: string): string[] {
  return readdirSync(root, { withFileTypes: true }).flatMap((entry) => (entry.isDirectory() ? everyFile(join(root, entry.name)) : [join(root, entry.name)]));
}

const secrets = () => everyFile(dir).filter((file) => /\.(seed|creds|key|nk)$/.test(file));

beforeAll(() => requireTools());

describe("leafmesh keys", () => {
  it("has a help for itself and each command", async () => {
    const top = await keys("--help");
    expect(top.code).toBe(0);
    for (const command of ["init", "issue", "list", "revoke"]) {
      expect(top.stdout).toContain(`  ${command}`);
      const help = await keys(command, "--help");
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`Usage: leafmesh keys ${command}`);
      expect(help.stdout).toContain("--dir DIR");
    }
    expect((await keys("issue", "--help")).stdout).toContain("--node NODE");
    expect((await keys("revoke", "--help")).stdout).toContain("--hub URLS");
    expect((await keys("frobnicate")).code).toBe(2);
    expect((await keys()).code).toBe(2);
  });

  it("init creates the root of trust with every secret 0600 and refuses to overwrite it", async () => {
    const result = await keys("init", "--dir", dir);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/operator\s+O[A-Z2-7]{55}/);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(secrets().length).toBeGreaterThanOrEqual(7);
    for (const file of secrets()) expect(statSync(file).mode & 0o777, relative(dir, file)).toBe(0o600);
    expect(statSync(join(dir, "swarm.key")).mode & 0o777).toBe(0o600);
    // the pre-shared key is in @libp2p/pnet's swarm.key format: the tunnel parses it
    expect(parsePsk(readFileSync(join(dir, "swarm.key"))).byteLength).toBeGreaterThan(0);
    // the CA signed the hub's certificate
    expect(execFileSync("openssl", ["verify", "-CAfile", join(dir, "ca", "ca.crt"), join(dir, "hub", "hub.crt")], { encoding: "utf8" })).toContain(": OK");
    const again = await keys("init", "--dir", dir);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("already holds mesh keys: refusing to overwrite them");
  });

  it("issue writes a node bundle (creds, cert, key, CA, PSK) without printing a secret; issuing again is refused, --rotate revokes and makes a new key", async () => {
    const first = await keys("issue", "--dir", dir, "--node", "edge-a");
    expect(first.code, first.stderr).toBe(0);
    const bundle = join(dir, "nodes", "edge-a");
    expect(readdirSync(bundle).sort()).toEqual(["ca.crt", "node.creds", "node.crt", "node.key", "swarm.key"]);
    expect(execFileSync("openssl", ["verify", "-CAfile", join(bundle, "ca.crt"), join(bundle, "node.crt")], { encoding: "utf8" })).toContain(": OK");
    // Valid from a week before they were issued: an edge box whose clock runs days behind (no RTC, no NTP yet) still takes them.
    for (const file of [join(bundle, "ca.crt"), join(bundle, "node.crt"), join(dir, "hub", "hub.crt")]) {
      const validFrom = Date.parse(new X509Certificate(readFileSync(file)).validFrom);
      expect(Date.now() - validFrom, file).toBeGreaterThan(6.9 * 24 * 3_600_000);
    }
    const firstUser = /user\s+(U\w+)/.exec(first.stdout)![1];
    const refused = await keys("issue", "--dir", dir, "--node", "edge-a");
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`node 'edge-a' already has credentials (user ${firstUser}`);
    expect(refused.stderr).toContain("Give --rotate");
    const second = await keys("issue", "--dir", dir, "--node", "edge-a", "--rotate");
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toContain(`node edge-a: user key ${firstUser} revoked, its certificate is on the revocation list`);
    expect(/user\s+(U\w+)/.exec(second.stdout)![1]).not.toBe(firstUser);
    expect(JSON.parse((await keys("list", "--dir", dir, "--json")).stdout)[0]).toMatchObject({ node: "edge-a", status: "active", revokedKeys: 1 });
    for (const output of [first, second]) expect(output.stdout + output.stderr).not.toMatch(/(?<![A-Z2-7])S[UAO][A-Z2-7]{56}(?![A-Z2-7])|eyJ|BEGIN/); // a seed stands alone (58 characters); "SU" inside a public key is not one
    // the first issue created the node's account (hubs must learn it); the rotation changed it (its revocations)
    expect(first.stdout).toContain("not pushed to any hub (no --hub)");
    expect(second.stdout).toContain("not pushed to any hub (no --hub)");
    for (const file of secrets()) expect(statSync(file).mode & 0o777, relative(dir, file)).toBe(0o600);
    const bad = await keys("issue", "--dir", dir, "--node", "Edge_A");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--node 'Edge_A' is not valid");
    const badTime = await keys("issue", "--dir", dir, "--node", "edge-b", "--expires", "tomorrow");
    expect(badTime.stderr).toContain("--expires: 'tomorrow' is not an ISO 8601 time");
    const pastTime = await keys("issue", "--dir", dir, "--node", "edge-b", "--expires", "2001-01-01T00:00:00Z");
    expect(pastTime.code).toBe(2);
    expect(pastTime.stderr).toContain("--expires: 2001-01-01T00:00:00.000Z is in the past");
    // Hosts a certificate cannot usefully carry are refused, each named, before anything is written.
    for (const [flag, command, host] of [["--hosts", "issue", "1.2.3.999"], ["--hosts", "issue", "bad host"], ["--hosts", "issue", "-x.example.net"], ["--hosts", "issue", "a\nkeyUsage=keyCertSign"]]) {
      const bad = await keys(command, "--dir", dir, "--node", "edge-h", `${flag}=${host}`);
      expect(bad.code, host).toBe(2);
      expect(bad.stderr).toContain(`${flag}: '${host}' is not an IP address or a DNS name`);
    }
    expect(readdirSync(join(dir, "nodes"))).not.toContain("edge-h");
    const badHub = await keys("init", "--dir", join(base, "other-keys"), "--hub-hosts", "hub 1.example.net");
    expect(badHub.code).toBe(2);
    expect(badHub.stderr).toContain("--hub-hosts: 'hub 1.example.net' is not an IP address or a DNS name");
  });

  it("list shows each node's status; revoke marks it and says it was not pushed without --hub", async () => {
    // Credentials that expire in a second: expired by the time they are listed (a time in the past is refused).
    const edgeBExpires = Date.now() + 1_500;
    expect((await keys("issue", "--dir", dir, "--node", "edge-b", "--expires", new Date(edgeBExpires).toISOString())).code).toBe(0);
    expect((await keys("issue", "--dir", dir, "--node", "edge-c")).code).toBe(0);
    const revoke = await keys("revoke", "--dir", dir, "--node", "edge-c");
    expect(revoke.code, revoke.stderr).toBe(0);
    expect(revoke.stdout).toMatch(/node edge-c: user key U\w+ revoked/);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, edgeBExpires + 1_000 - Date.now())));
    const table = (await keys("list", "--dir", dir)).stdout.split("\n");
    expect(table[0]).toMatch(/^NODE\s+STATUS\s+USER KEY/);
    expect(table.find((line) => line.startsWith("edge-a"))).toMatch(/edge-a\s+active\s+U\w+/);
    expect(table.find((line) => line.startsWith("edge-b"))).toMatch(/edge-b\s+expired/);
    expect(table.find((line) => line.startsWith("edge-c"))).toMatch(/edge-c\s+revoked\s+-.*\s1\s+-$/);
    // Each node's certificate end (825 days from its issue), and the hubs' certificate with its names.
    expect(table[0]).toMatch(/EXPIRES\s+CERTIFICATE ENDS\s+REVOKED KEYS/);
    expect(table.find((line) => line.startsWith("edge-a"))).toMatch(new RegExp(`\\s${new Date(Date.now() + 825 * 86_400_000).toISOString().slice(0, 10)}T`));
    expect(table.find((line) => line.startsWith("hub certificate"))).toMatch(/^hub certificate .*hub\.crt: ends \d{4}-\d\d-\d\dT.*, names localhost, 127\.0\.0\.1, ::1 \(issue it again with leafmesh keys hub-cert\)$/);
    const json = JSON.parse((await keys("list", "--dir", dir, "--json")).stdout);
    expect(json.map((node: { status: string }) => node.status)).toEqual(["active", "expired", "revoked"]);
    const twice = await keys("revoke", "--dir", dir, "--node", "edge-c");
    expect(twice.stderr).toContain("already revoked");
    expect((await keys("revoke", "--dir", dir, "--node", "edge-z")).stderr).toContain("node 'edge-z' was never issued");
    expect((await keys("list", "--dir", join(base, "nowhere"))).stderr).toContain("holds no mesh keys (no state.json): run `leafmesh keys init");
    // A directory that cannot be had is a bad --dir (under /proc Node's recursive mkdir never returned: lib/make-dirs.ts).
    const underProc = await keys("init", "--dir", "/proc/leafmesh-keys");
    expect(underProc.code).toBe(2);
    expect(underProc.stderr).toContain("--dir: cannot use /proc/leafmesh-keys: it cannot be made there");
    expect(underProc.stderr).not.toMatch(/\n\s+at /);
  });

  it("hubs and agents refuse to start from secrets with loose permissions", () => {
    expect(() => loadNodeSecurity(dir, "edge-a")).not.toThrow();
    expect(() => loadHubSecurity(dir, { resolverDir: join(base, "resolver") })).not.toThrow();
    for (const file of [join(dir, "nodes", "edge-a", "node.creds"), join(dir, "nodes", "edge-a", "node.key"), join(dir, "nodes", "edge-a", "swarm.key")]) {
      chmodSync(file, 0o644);
      expect(() => loadNodeSecurity(dir, "edge-a")).toThrow(`secret file ${file} has permissions 0644`);
      chmodSync(file, 0o600);
    }
    const hubKey = join(dir, "hub", "hub.key");
    chmodSync(hubKey, 0o640);
    expect(() => loadHubSecurity(dir, { resolverDir: join(base, "resolver") })).toThrow(`secret file ${hubKey} has permissions 0640`);
    chmodSync(hubKey, 0o600);
    const publisher = join(dir, "hub", "publisher.creds");
    chmodSync(publisher, 0o604);
    expect(() => loadHubSecurity(dir, { resolverDir: join(base, "resolver") })).toThrow(/publisher\.creds has permissions 0604/);
    chmodSync(publisher, 0o600);
  });

  it("the node's own bundle directory (as copied to the node) loads too, without the rest of the keys", () => {
    const node = loadNodeSecurity(join(dir, "nodes", "edge-a"), "edge-a");
    expect(node.leafRemoteFragment).toContain(`credentials: ${JSON.stringify(join(dir, "nodes", "edge-a", "node.creds"))}`);
    expect(node.localAuthFragment).toMatch(/nkey: "U[A-Z2-7]{55}"/);
    expect(node.localAuthFragment).not.toMatch(/(?<![A-Z2-7])S[UA][A-Z2-7]{56}(?![A-Z2-7])/);
    expect(node.clientConnectOptions.inboxPrefix).toBe("_INBOX_edge-a");
    // Its local nkey comes from node.key: nothing is written into the bundle (trust/local-nkey.ts).
    expect(existsSync(join(dir, "nodes", "edge-a", "local.nk"))).toBe(false);
    expect(() => loadNodeSecurity(join(dir, "nodes", "edge-c"), "edge-c")).not.toThrow(); // revoked creds still load: the hub refuses them
    expect(() => loadNodeSecurity(join(base, "empty"), "edge-q")).toThrow(/no credentials for node 'edge-q'/);
  });
});
