/**
 * A hub whose keys name its real hosts, as docs/trust.md shows, through the CLI
 * as a user runs it: `keys init --hub-hosts ...`, `keys issue`, `leafmesh hub`
 * with those keys, an agent attaching to it by a name in the hub's certificate,
 * `leafmesh status` of the hub and of the agent, and `keys issue --hub` pushing
 * to the running hub.
 *
 * The hub's own clients used to dial themselves on 127.0.0.1, which nats.js and
 * Node verify as `localhost`: a certificate without `localhost` (any real host
 * list) stopped the hub at start ("Hostname/IP does not match certificate's
 * altnames"). They now know the hub by its certificate (trust/tls.ts
 * `ownCertificateTls`).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { connect as tlsConnect, createServer as createTlsServer } from "node:tls";
import { eventually } from "../test/support/ports.ts";
import { ownCertificateTls } from "./tls.ts";
import { natsServerResolving } from "../test/support/hosts-file.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, runCliOk as cli } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";

interface StatusJson {
  status: { node: string; role: string; links: { kind: string; direction: string; up: boolean; remote?: string }[] };
}

beforeAll(() => requireTools());
afterAll(() => stopAllProcesses());

describe.each([
  // the example of docs/trust.md: a name and an address, no localhost; the agent dials the address
  { hubHosts: "hub-1.example.net,127.0.0.1", dial: "127.0.0.1" },
  // only the hub's name: the agent dials it by name (resolved to loopback in a mount namespace of its leaf server's own)
  { hubHosts: "hub-1.example.net", dial: "hub-1.example.net" },
])("keys init --hub-hosts $hubHosts", ({ hubHosts, dial }) => {
  let keys: string;
  let hub: HubProcess;
  let agent: AgentProcess;

  beforeAll(async () => {
    const base = tempDir("leafmesh-hub-hosts-");
    keys = join(base, "keys");
    await cli("keys", "init", "--dir", keys, "--hub-hosts", hubHosts);
    await cli("keys", "issue", "--dir", keys, "--node", "edge-a");
    hub = await startHubProcess({ name: "hub-1", keys });
  }, 90_000);

  afterAll(() => stopAllProcesses());

  it("the hub starts and answers `leafmesh status`", async () => {
    const view = JSON.parse(await cli("status", "--json", "--keys", keys, "--nats", hub.clientUrl)) as StatusJson;
    expect(view.status).toMatchObject({ node: "hub-1", role: "hub" });
    expect(hub.output()).toContain("hub ready");
  });

  it("an agent attaches by a name in the certificate, and both say so in `leafmesh status`", async () => {
    const leafPort = new URL(hub.leafUrl).port;
    const env = dial === "127.0.0.1" ? undefined : { LEAFMESH_NATS_SERVER: natsServerResolving(tempDir("leafmesh-hosts-"), { [dial]: "127.0.0.1" }) };
    agent = await startAgentProcess({ node: "edge-a", hubs: [`tls://${dial}:${leafPort}`], keys, env, extraArgs: ["--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off"] });
    const agentView = JSON.parse(await cli("status", "--json", "--keys", keys, "--node", "edge-a", "--nats", agent.clientUrl)) as StatusJson;
    expect(agentView.status.links).toContainEqual(expect.objectContaining({ kind: "leaf", direction: "upstream", up: true }));
    const hubView = JSON.parse(await cli("status", "--json", "--keys", keys, "--nats", hub.clientUrl)) as StatusJson;
    expect(hubView.status.links.filter((link) => link.kind === "leaf" && link.up)).not.toEqual([]);
  });

  it("`keys issue --hub` pushes to the running hub by its address", async () => {
    const output = await cli("keys", "issue", "--dir", keys, "--node", "edge-b", "--hub", hub.clientUrl.replace("nats://", "tls://"));
    expect(output).toMatch(/pushed account A\w+ to hub hub-1/);
  });

  // Only with a certificate that names no IP address; on this block's hub, not one of its own (edge-b was issued just above).
  if (dial !== "127.0.0.1") it("an agent dialling an address its hub's certificate does not name is refused (remote clients still check the name)", async () => {
    const refused = await startAgentProcess({ node: "edge-b", hubs: [hub.leafUrl.replace("nats://", "tls://")], keys, extraArgs: ["--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off"] });
    // Go's words for it: the certificate has a name but no IP address
    await eventually(() => /x509: cannot validate certificate for 127\.0\.0\.1 because it doesn't contain any IP SANs/.test(refused.output()), 15_000, "the agent's leaf to refuse the hub's certificate for 127.0.0.1");
    const agentView = JSON.parse(await cli("status", "--json", "--keys", keys, "--node", "edge-b", "--nats", refused.clientUrl)) as StatusJson;
    expect(agentView.status.links.filter((link) => link.up)).toEqual([]);
  });
});

describe("who is held to what", () => {
  it("the hub's own clients accept the hub's certificate only, not another certificate of the mesh CA that names the host they dialled", async () => {
    const keys = join(tempDir("leafmesh-hub-hosts-"), "keys");
    // As `keys init --hub-hosts` and `keys issue --hosts` make them (the same functions, without a CLI process each:
    // no hub runs in this test, and the CLI is run by the blocks above).
    await initKeys({ dir: keys, hubHosts: ["hub-1.example.net"] });
    // A node whose certificate names 127.0.0.1, serving TLS there as if it were the hub.
    await issueNode({ dir: keys, node: "edge-x", hosts: ["127.0.0.1", "localhost"] });
    const bundle = join(keys, "nodes", "edge-x");
    const impostor = createTlsServer({ cert: readFileSync(join(bundle, "node.crt")), key: readFileSync(join(bundle, "node.key")) }, (socket) => socket.end());
    await new Promise<void>((resolve) => impostor.listen(0, "127.0.0.1", resolve));
    const port = (impostor.address() as AddressInfo).port;
    const hubTls = ownCertificateTls({ certFile: join(keys, "hub", "hub.crt"), keyFile: join(keys, "hub", "hub.key"), caFile: join(keys, "hub", "ca.crt") }, "this mesh's hub certificate");
    const dial = (servername?: string) =>
      new Promise<Error | undefined>((resolve) => {
        const socket = tlsConnect({ host: "127.0.0.1", port, servername, ca: readFileSync(hubTls.caFile), cert: readFileSync(hubTls.certFile), key: readFileSync(hubTls.keyFile), checkServerIdentity: hubTls.checkServerIdentity });
        socket.once("secureConnect", () => (socket.destroy(), resolve(undefined)));
        socket.once("error", (error) => resolve(error));
      });
    try {
      // the name check alone would accept it: the mesh CA signed it for 127.0.0.1/localhost
      const named = await new Promise<Error | undefined>((resolve) => {
        const socket = tlsConnect({ host: "127.0.0.1", port, servername: "localhost", ca: readFileSync(hubTls.caFile) });
        socket.once("secureConnect", () => (socket.destroy(), resolve(undefined)));
        socket.once("error", (error) => resolve(error));
      });
      expect(named).toBeUndefined();
      const refused = await dial("localhost");
      expect(refused?.message).toMatch(/presented a certificate \(edge-x.*\) that is not this mesh's hub certificate/);
    } finally {
      impostor.close();
    }
  });
});
