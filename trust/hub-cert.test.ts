/**
 * The hubs' certificate issued again on a live mesh (`leafmesh keys hub-cert`), as a user does it: a hub reached by
 * a name its certificate does not list (a second name, added later) refuses the agent that dials it so; the
 * certificate issued again with that name lands in the hub's keys, the hub takes it by itself (starting again in
 * place: the same process), and the agent's leaf comes up. Before, a new name meant a new mesh.
 */
import { X509Certificate } from "node:crypto";
import { copyFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { natsServerResolving } from "../test/support/hosts-file.ts";
import { eventually } from "../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, runCliOk as cli } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { certificateHosts } from "./hub-certificate.ts";

let keys: string;
let hub: HubProcess;
let agent: AgentProcess;

const leafUp = async (process: AgentProcess) => (await process.view().catch(() => undefined))?.status.links.some((link) => link.kind === "leaf" && link.direction === "upstream" && link.up) ?? false;

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-hub-cert-"), "keys");
  await cli("keys", "init", "--dir", keys, "--hub-hosts", "hub-1.example.net");
  await cli("keys", "issue", "--dir", keys, "--node", "edge-a");
  hub = await startHubProcess({ name: "hub-1", keys });
}, 90_000);

afterAll(() => stopAllProcesses());

describe("keys hub-cert on a live mesh", () => {
  it("a name added to the hubs' certificate is taken by the running hub, and an agent dialling that name gets in", async () => {
    const leafPort = new URL(hub.leafUrl).port;
    const resolving = natsServerResolving(tempDir("leafmesh-hosts-"), { "hub-1.example.net": "127.0.0.1", "hub-2.example.net": "127.0.0.1" });
    agent = await startAgentProcess({ node: "edge-a", hubs: [`tls://hub-2.example.net:${leafPort}`], keys, env: { LEAFMESH_NATS_SERVER: resolving }, extraArgs: ["--mdns", "off"] });
    await eventually(() => /x509: certificate is valid for hub-1\.example\.net, not hub-2\.example\.net/.test(agent.output()) || undefined, 15_000, "the agent's leaf to refuse the hub's certificate for hub-2.example.net");
    expect(await leafUp(agent)).toBe(false);

    const pid = hub.child.pid;
    const readyBefore = hub.output().match(/"msg":"hub ready"/g)?.length ?? 0;
    const output = await cli("keys", "hub-cert", "--dir", keys, "--hub-hosts", "hub-1.example.net,hub-2.example.net");
    expect(output).toContain("hosts      hub-1.example.net, hub-2.example.net");
    expect(output).toMatch(/next: copy .*\/hub\/ to each hub/);
    await eventually(() => (hub.output().match(/"msg":"hub ready"/g)?.length ?? 0) > readyBefore || undefined, 60_000, "the hub to start again with its new certificate");
    expect(hub.output()).toMatch(/keys replaced on disk: stopping, and starting again in place with them/);
    expect(hub.child.pid).toBe(pid);
    await eventually(() => leafUp(agent).then((up) => up || undefined), 30_000, "the agent's leaf through hub-2.example.net");
    // The publisher's lease and the catalog came back with it: status answers.
    expect(JSON.parse(await cli("status", "--json", "--keys", keys, "--nats", hub.clientUrl)).status.role).toBe("hub");
  }, 120_000);

  it("keeps the names of the certificate it replaces when none are given", async () => {
    await cli("keys", "hub-cert", "--dir", keys);
    expect(certificateHosts(readFileSync(join(keys, "hub", "hub.crt")))).toEqual(["hub-1.example.net", "hub-2.example.net"]);
    const ends = Date.parse(new X509Certificate(readFileSync(join(keys, "hub", "hub.crt"))).validTo);
    expect(ends - Date.now()).toBeGreaterThan(800 * 86_400_000);
  });

  it("a running hub given a certificate that is not its key's says so once and runs on", async () => {
    await eventually(() => leafUp(agent).then((up) => up || undefined), 60_000, "the agent's leaf before");
    const pid = hub.child.pid;
    const restarts = () => hub.output().match(/keys replaced on disk: stopping/g)?.length ?? 0;
    const before = restarts();
    // A node's certificate copied over the hub's by mistake.
    copyFileSync(join(keys, "nodes", "edge-a", "node.crt"), join(keys, "hub", "hub.crt"));
    await eventually(() => /hub hub-1's files changed on disk, but it cannot start with them: .*hub\.key is not the key of .*hub\.crt/.test(hub.output()) || undefined, 20_000, "the hub to refuse the files");
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    expect(restarts()).toBe(before);
    expect(hub.output().match(/cannot start with them/g)).toHaveLength(1);
    expect(hub.child.pid).toBe(pid);
    expect(await leafUp(agent)).toBe(true);
  }, 60_000);
});
