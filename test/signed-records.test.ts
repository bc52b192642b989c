/**
 * Issue 8: "an agent's libp2p identity is bound to its node record, so a peer
 * claiming a node name with another key is refused". Real processes with security
 * on: a hub and two agents whose tunnel proves records and peers with the node
 * certificates of the mesh. A forged record for edge-b (written with the mesh
 * account's credentials, which may write any key) is not used by edge-a, which
 * keeps reaching the genuine edge-b; a libp2p host with edge-a's stolen key that
 * claims to be edge-b is refused and hung up on.
 */
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { multiaddr } from "@multiformats/multiaddr";
import { afterEach, describe, expect, it } from "vitest";
import { encodeNodeRecord } from "../bus/node-record.ts";
import { buckets } from "../bus/subjects.ts";
import { silentLogger } from "../lib/log.ts";
import { parsePsk } from "../services/tunnel/index.ts";
import { requestTarget } from "../services/tunnel/stream-header.ts";
import { startTunnelHost, type TunnelHost } from "../services/tunnel/host.ts";
import { decodeDirectoryValue } from "../services/tunnel/node-identity.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { loadNodeSecurity } from "../trust/security.ts";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { proxyListener, startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "./support/processes.ts";

const servers: Server[] = [];
let impostor: TunnelHost | undefined;
afterEach(async () => {
  await impostor?.stop();
  for (const server of servers.splice(0)) server.close();
  await stopAllProcesses();
});


describe("node records and libp2p peers proven by the mesh's certificates", () => {
  it("ignores a forged record, refuses a peer with another key, and keeps reaching the genuine node", { timeout: 150_000 }, async () => {
    const keys = join(tempDir(), "keys");
    await initKeys({ dir: keys });
    for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
    const backendPort = await freePort();
    const backend = createServer((_request, response) => response.end("hello from edge-b\n"));
    await new Promise<void>((resolve) => backend.listen(backendPort, "127.0.0.1", resolve));
    servers.push(backend);
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10", endpoints: [{ ip: "127.0.0.1", node: "edge-b" }], backendPort }));
    const hub = await startHubProcess({ name: "hub-1", manifests, keys });
    const tunnelArgs = ["--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off"];
    const [edgeA] = await Promise.all(["edge-a", "edge-b"].map((node) => startAgentProcess({ node, hubs: [hub.leafUrl], keys, extraArgs: tunnelArgs })));
    const listener = await proxyListener(edgeA, "demo/web:http/TCP");
    const get = async () => (await fetch(`http://${listener.host}:${listener.port}/`, { signal: AbortSignal.timeout(10_000) })).text();
    expect(await eventually(get, 30_000, "edge-b's backend through the tunnel")).toBe("hello from edge-b\n");

    // A record for edge-b with an attacker's peer id, written past the node accounts (the mesh account may write any key).
    const hubConnection = await hub.connection();
    const nodes = await new Kvm(hubConnection).open(buckets.nodes);
    const genuineB = decodeDirectoryValue("edge-b", (await nodes.get("edge-b"))!.value, undefined).record!;
    await nodes.put("edge-b", encodeNodeRecord({ ...genuineB, peerId: "12D3KooWD3vMmZtkYsvG6cVqU3ZvdcBw6TQ8ugQxENvRFdqXnXvt" }));
    await eventually(() => /"peer":"edge-b","reason":"node record claiming to be 'edge-b' refused: it is not signed[^"]*","msg":"node record not used"/.test(edgeA.output()), 15_000, "edge-a to refuse the unsigned record");
    // edge-b sees its key hold another value and puts its genuine record back at its next look (5 s, not at its
    // keep-alive a minute later); edge-a uses it again.
    await eventually(() => /"peer":"edge-b","msg":"node record usable again"/.test(edgeA.output()), 20_000, "edge-a to take edge-b's genuine record again");
    expect(await get()).toBe("hello from edge-b\n");

    // A libp2p host with the mesh key and edge-a's stolen certificate, claiming to be edge-b, dials edge-a.
    const security = loadNodeSecurity(keys, "edge-a");
    const stolen = { certPem: readFileSync(security.files.cert, "utf8"), keyPem: readFileSync(security.files.key, "utf8"), caPem: readFileSync(security.files.ca, "utf8") };
    impostor = await startTunnelHost({ node: "edge-b", listen: ["/ip4/127.0.0.1/tcp/0"], psk: parsePsk(security.psk), log: silentLogger(), mdns: false, identity: stolen });
    const recordA = decodeDirectoryValue("edge-a", (await nodes.get("edge-a"))!.value, undefined).record!;
    const connection = await impostor.libp2p.dial(multiaddr(`${recordA.listen[0]}/p2p/${recordA.peerId}`));
    const target = { host: "127.0.0.1", port: backendPort, protocol: "TCP" as const };
    await expect(impostor.openStream(connection).then((stream) => requestTarget(stream, target, { timeoutMs: 10_000, peer: "edge-a", log: silentLogger() }))).rejects.toThrow();
    await eventually(
      () => edgeA.output().includes(`claims to be node 'edge-b': node record claiming to be 'edge-b' refused: its certificate belongs to 'edge-a'`),
      15_000,
      "edge-a to refuse the impostor with the reason",
    );
    await eventually(() => impostor!.libp2p.getConnections().length === 0, 15_000, "edge-a to hang up on the impostor");
    // The genuine edge-b is still served.
    expect(await get()).toBe("hello from edge-b\n");
    expect(edgeA.output()).not.toMatch(/"level":50/);

    // Stopped cleanly, edge-a takes its own record out with its own credentials (a delete of its key only).
    expect(await edgeA.stop()).toBe(0);
    expect((await nodes.get("edge-a"))?.operation).toBe("DEL");
    expect(edgeA.output()).toMatch(/node record withdrawn from mesh-nodes/);
  });
});
