/**
 * Hubs on Kubernetes, keys from a Secret (`leafmesh keys k8s-secret`), as
 * deploy/kubernetes/20-hub.yaml and docs/kubeedge.md run them. Before, the
 * manifests told the user to `kubectl create secret --from-file=keys/`, which
 * drops hub/ and accounts/, so no hub could start from it; and the enrolling
 * hub was to get its keys by `kubectl cp` into a pod that exits without them.
 *
 * The Secret is mounted as kubelet mounts it (test/support/secret-volume.ts:
 * `..data`, timestamped directories, symlinks, mode 0400) and real hubs and
 * agents run from it.
 */
import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../lib/log.ts";
import { eventually } from "../test/support/ports.ts";
import { runCli, runCliOk as cli, startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { projectSecret, secretData } from "../test/support/secret-volume.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { flatName, keysSecretManifest, pathOfFlatName, unpackFlatKeys } from "./flat-keys.ts";
import { certificateHosts } from "./hub-certificate.ts";
import { initKeys, readKeyState } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";

let keys: string;

/** Every file under `dir`, relative, sorted. */
function filesOf(dir: string, prefix = ""): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true })
    .flatMap((entry) => (entry.isDirectory() ? filesOf(dir, join(prefix, entry.name)) : [join(prefix, entry.name)]))
    .sort();
}

const leafUp = async (agent: Awaited<ReturnType<typeof startAgentProcess>>) =>
  (await agent.view().catch(() => undefined))?.status.links.some((link) => link.kind === "leaf" && link.direction === "upstream" && link.up) ?? false;

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-flat-keys-"), "keys");
  // As `leafmesh keys init --hub-hosts` and `keys issue` make them (the same functions, without a CLI process each);
  // the commands under test here are `keys k8s-secret` and `keys hub-cert`.
  await initKeys({ dir: keys, hubHosts: ["hub-1.example.net", "127.0.0.1"] });
  await issueNode({ dir: keys, node: "edge-a" });
}, 60_000);

afterAll(() => stopAllProcesses());

describe("keys k8s-secret", () => {
  it("holds the hubs' copy under keys Kubernetes accepts, and no seed or CA key", async () => {
    const result = await runCli(["keys", "k8s-secret", "--dir", keys]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/^Secret leafmesh\/leafmesh-hub-keys: \d+ files of .* \(hubs\), \d+ bytes/);
    const data = secretData(result.stdout);
    for (const key of Object.keys(data)) expect(key).toMatch(/^[-._a-zA-Z0-9]+$/); // Kubernetes' rule for Secret keys
    const paths = Object.keys(data).filter((key) => key !== "leafmesh-keys-layout").map(pathOfFlatName).sort();
    expect(paths).toContain("hub/hub.key");
    expect(paths).toContain("accounts/node-edge-a.jwt");
    expect(paths).toContain("hub/audit/edge-a.creds");
    expect(paths.filter((path) => path.endsWith(".seed") || path.startsWith("ca/") || path.startsWith("nodes/") || path === "swarm.key")).toEqual([]);
    expect(data["hub__hub.key"].equals(readFileSync(join(keys, "hub", "hub.key")))).toBe(true);

    const all = secretData(await cli("keys", "k8s-secret", "--dir", keys, "--part", "all", "--name", "leafmesh-enrol-keys"));
    expect(Object.keys(all)).toContain("ca__ca.key");
    expect(Object.keys(all)).toContain("operator.seed");
    expect(Object.keys(all).filter((key) => key !== "leafmesh-keys-layout").map(pathOfFlatName).sort()).toEqual(filesOf(keys).filter((file) => !file.split("/").some((part) => part.startsWith("."))));
  });

  it("says what is wrong: not a keys directory, an unknown part, over the 1 MiB a Secret may hold", async () => {
    const notKeys = tempDir("leafmesh-not-keys-");
    const refused = await runCli(["keys", "k8s-secret", "--dir", notKeys]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(`${notKeys} is not a keys directory (no state.json or operator.jwt)`);
    const badPart = await runCli(["keys", "k8s-secret", "--dir", keys, "--part", "hub"]);
    expect(badPart.stderr).toContain("--part: 'hub' is neither hubs nor all");
    const big = join(tempDir("leafmesh-big-keys-"), "keys");
    await initKeys({ dir: big });
    writeFileSync(join(big, "hub", "notes.txt"), Buffer.alloc(1024 * 1024, "x"));
    expect(() => keysSecretManifest({ dir: big, part: "hubs", name: "n", namespace: "ns" })).toThrow(/over the 1 MiB Kubernetes allows a Secret/);
  });

  it("maps paths one to one, and refuses a name that would be ambiguous or leave the directory", () => {
    expect(flatName("hub/audit/edge-a.creds")).toBe("hub__audit__edge-a.creds");
    expect(pathOfFlatName("hub__audit__edge-a.creds")).toBe("hub/audit/edge-a.creds");
    expect(() => flatName("hub/a__b.creds")).toThrow(/cannot carry/);
    expect(() => flatName("hub/.lock")).toThrow(/cannot carry/);
    expect(() => pathOfFlatName("hub____x")).toThrow(/not a key of a leafmesh keys Secret/);
    expect(() => pathOfFlatName("..__etc__passwd")).toThrow(/not a key/);
  });
});

describe("a hub whose --keys is the Secret's mount", () => {
  it("runs from the hubs' copy, an agent joins it, and a certificate issued again in the Secret restarts it in place", async () => {
    const mount = join(tempDir("leafmesh-secret-mount-"), "keys");
    const secret = secretData(await cli("keys", "k8s-secret", "--dir", keys));
    projectSecret(mount, secret);
    const dataDir = tempDir("leafmesh-hub-data-");
    const unpacked = join(dataDir, "keys");
    const hub = await startHubProcess({ name: "hub-1", keys: unpacked, keysMount: mount, dataDir });
    expect(hub.output()).toMatch(/"msg":"keys: unpacked from the Secret"/);
    // The hubs' copy (the Secret just projected: the keys directory has not changed since), unpacked with the layout
    // a keys directory has, every file 0600.
    expect(filesOf(unpacked).filter((file) => !file.startsWith("."))).toEqual(
      Object.keys(secret)
        .filter((key) => key !== "leafmesh-keys-layout")
        .map(pathOfFlatName)
        .sort(),
    );
    for (const file of filesOf(unpacked)) expect(statSync(join(unpacked, file)).mode & 0o777, file).toBe(0o600);

    const agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl.replace("nats://", "tls://")], keys: join(keys, "nodes", "edge-a"), extraArgs: ["--mdns", "off"] });
    await eventually(() => leafUp(agent).then((up) => up || undefined), 30_000, "the agent's leaf to the hub run from the Secret");

    // keys hub-cert, the Secret made again and applied: kubelet swaps the mount, the hub takes it.
    const pid = hub.child.pid;
    const readyBefore = hub.output().match(/"msg":"hub ready"/g)?.length ?? 0;
    await cli("keys", "hub-cert", "--dir", keys, "--hub-hosts", "hub-1.example.net,hub-2.example.net,127.0.0.1");
    projectSecret(mount, secretData(await cli("keys", "k8s-secret", "--dir", keys)));
    await eventually(() => (hub.output().match(/"msg":"hub ready"/g)?.length ?? 0) > readyBefore || undefined, 60_000, "the hub to start again with the Secret's new certificate");
    expect(hub.child.pid).toBe(pid);
    expect(certificateHosts(readFileSync(join(unpacked, "hub", "hub.crt")))).toEqual(["hub-1.example.net", "hub-2.example.net", "127.0.0.1"]);
    expect(new X509Certificate(readFileSync(join(unpacked, "hub", "hub.crt"))).fingerprint256).toBe(new X509Certificate(readFileSync(join(keys, "hub", "hub.crt"))).fingerprint256);
    await eventually(() => leafUp(agent).then((up) => up || undefined), 30_000, "the agent's leaf again after the hub's restart");
    // status from inside the pod, with the unpacked keys; the mount itself is refused with where to look.
    expect(JSON.parse(await cli("status", "--json", "--keys", unpacked, "--nats", hub.clientUrl)).status.role).toBe("hub");
    const fromMount = await runCli(["status", "--keys", mount, "--nats", hub.clientUrl]);
    expect(fromMount.code).not.toBe(0);
    expect(fromMount.stderr).toContain(`${mount} is a keys Secret's mount: give the keys directory the hub unpacked it into (DATA/keys)`);
  }, 180_000);

  it("the enrolling hub is seeded from the whole directory once, and keeps the nodes it enrolled across a restart", async () => {
    const own = join(tempDir("leafmesh-enrol-keys-"), "keys");
    await initKeys({ dir: own });
    const mount = join(tempDir("leafmesh-enrol-mount-"), "keys");
    projectSecret(mount, secretData(await cli("keys", "k8s-secret", "--dir", own, "--part", "all")));
    const dataDir = tempDir("leafmesh-enrol-data-");
    const unpacked = join(dataDir, "keys");
    const hub = await startHubProcess({ name: "hub-0", keys: unpacked, keysMount: mount, dataDir, extraArgs: ["--enrol"] });
    expect(hub.output()).toMatch(/"msg":"keys: seeded from the Secret \(from now on this hub's own\)"/);
    expect(existsSync(join(unpacked, "ca", "ca.key"))).toBe(true);

    // As docs/kubeedge.md says: the token made in the enrolling hub's own keys directory (kubectl exec).
    const token = (await cli("keys", "token", "--dir", unpacked, "--url", hub.clientUrl.replace("nats://", "tls://"))).trim();
    const joined = await startAgentProcess({ node: "edge-j", hubs: [hub.leafUrl.replace("nats://", "tls://")], join: token, extraArgs: ["--mdns", "off"] });
    await eventually(() => leafUp(joined).then((up) => up || undefined), 30_000, "the joined agent's leaf");
    expect(readKeyState(unpacked).nodes["edge-j"]).toBeDefined();
    // docs/kubeedge.md: the other hubs' Secret is made from here from now on, and holds the node it enrolled.
    const hubsCopy = Object.keys(secretData(await cli("keys", "k8s-secret", "--dir", unpacked)));
    expect(hubsCopy).toContain("accounts__node-edge-j.jwt");
    expect(hubsCopy.filter((key) => key.startsWith("."))).toEqual([]);

    await hub.stop();
    const again = await hub.restart();
    expect(again.output()).toMatch(/keeps its own keys directory, seeded from the Secret at its first start; the Secret is not applied again/);
    expect(readKeyState(unpacked).nodes["edge-j"]).toBeDefined();
    await eventually(() => leafUp(joined).then((up) => up || undefined), 30_000, "the joined agent's leaf after the hub's restart");
  }, 180_000);

  it("never replaces a keys directory that did not come from a Secret, and refuses a mount that is not a keys Secret", async () => {
    const mount = join(tempDir("leafmesh-mount-"), "keys");
    projectSecret(mount, secretData(await cli("keys", "k8s-secret", "--dir", keys)));
    const target = join(tempDir("leafmesh-target-"), "keys");
    mkdirSync(target);
    writeFileSync(join(target, "state.json"), "{}");
    expect(() => unpackFlatKeys({ mount, target, seedOnly: false, log: silentLogger() })).toThrow(`${target} exists and was not unpacked from a keys Secret`);
    expect(readFileSync(join(target, "state.json"), "utf8")).toBe("{}");

    const foreign = join(tempDir("leafmesh-foreign-mount-"), "keys");
    projectSecret(foreign, { "leafmesh-keys-layout": Buffer.from("flat/9\n"), "state.json": Buffer.from("{}") });
    expect(() => unpackFlatKeys({ mount: foreign, target: join(tempDir(), "keys"), seedOnly: false, log: silentLogger() })).toThrow(/says 'flat\/9', not 'flat\/1'/);
    const escaping = join(tempDir("leafmesh-escaping-mount-"), "keys");
    projectSecret(escaping, { "leafmesh-keys-layout": Buffer.from("flat/1\n"), "state.json": Buffer.from("{}"), "hub____x": Buffer.from("") });
    expect(() => unpackFlatKeys({ mount: escaping, target: join(tempDir(), "keys"), seedOnly: false, log: silentLogger() })).toThrow(/'hub____x' is not a key of a leafmesh keys Secret/);
  });
});
