/**
 * The secured fabric with real nats-server processes on loopback: a hub with
 * operator/JWT auth, a full resolver and TLS; agents' leaf servers with their
 * node's credentials; a "stolen node" speaking the leafnode protocol itself.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import { Writable } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { createLogger, silentLogger, type Logger } from "../lib/log.ts";
import { eventually } from "../test/support/ports.ts";
import { initKeys, explainUserKey, readKeyState } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { startSecuredHub, startSecuredLeaf, stopAllServers, requireTools, leafConnections, type SecuredHub, type SecuredLeaf } from "../test/support/trust-servers.ts";
import { connectRogueLeaf } from "../test/support/rogue-leaf.ts";
import { startTrustAuditor, type TrustAuditor } from "./auditor.ts";
import { explainDenial, watchPermissionErrors } from "./denials.ts";
import { runKeysCommand } from "../cli/keys.ts";
import { openCatalogMirror } from "../services/controller/agent-controller.ts";
import { Bus } from "../bus/bus.ts";
import { FabricMonitor } from "../nats/fabric-monitor.ts";
import { createUser, encodeUser, fmtCreds, type Algorithms } from "@nats-io/jwt";
import { writeSecretFile } from "./secret-files.ts";

function capturingLogger(): { log: Logger; lines: () => string } {
  let text = "";
  const destination = new Writable({
    write(chunk, _encoding, done) {
      text += chunk.toString();
      done();
    },
  });
  return { log: createLogger({ level: "info", destination }), lines: () => text };
}

let base: string;
let keys: string;
let hub: SecuredHub;
let publisher: NatsConnection;
let catalog: KV;
let nodesKv: KV;
let auditor: TrustAuditor;
const hubLog = capturingLogger();
const agentLog = capturingLogger();
const leaves = new Map<string, SecuredLeaf>();
const clients = new Map<string, NatsConnection>();
const connections: NatsConnection[] = [];

async function client(node: string): Promise<NatsConnection> {
  const leaf = leaves.get(node)!;
  const connection = await connect({ servers: leaf.clientUrl, ...leaf.security.clientConnectOptions, name: `agent ${node}` });
  connections.push(connection);
  return connection;
}

/** Collects what arrives on `subject` at `connection`. */
function collect(connection: NatsConnection, subject: string): string[] {
  const seen: string[] = [];
  connection.subscribe(subject, { callback: (_error, message) => {
    seen.push(`${message.subject} ${message.string()}`);
  } });
  return seen;
}

beforeAll(async () => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-trust-"));
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b", "edge-c"]) await issueNode({ dir: keys, node });
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
  publisher = await connect({ servers: hub.clientUrl, ...hub.security.publisherConnectOptions, name: "publisher" });
  connections.push(publisher);
  const kvm = new Kvm(publisher);
  catalog = await kvm.create("mesh-catalog", { history: 1 });
  nodesKv = await kvm.create("mesh-nodes", { history: 1 });
  await catalog.put("services.shop.web", "catalog-v1");
  auditor = await startTrustAuditor({ dir: keys, servers: [hub.clientUrl], tls: hub.security.publisherConnectOptions.tls, systemConnectOptions: hub.security.systemConnectOptions, log: hubLog.log });
  for (const node of ["edge-a", "edge-b", "edge-c"]) {
    leaves.set(node, await startSecuredLeaf({ node, bundleDir: keys, hubLeafUrl: hub.leafUrl, dir: join(base, node) }));
    clients.set(node, await client(node));
  }
}, 90_000);

afterAll(async () => {
  await auditor?.stop();
  for (const connection of connections) await connection.close().catch(() => undefined);
  await stopAllServers();
  if (base) rmSync(base, { recursive: true, force: true });
});

describe("a node's own subjects work through its account", () => {
  it("mesh events reach the hub, the own record is written, the catalog mirrors, rpc answers", async () => {
    const a = clients.get("edge-a")!;
    const atHub = collect(publisher, "mesh.>");
    await publisher.flush();
    await eventually(async () => {
      a.publish("mesh.edge-a.dns.stats", "own");
      await a.flush();
      return atHub.some((line) => line === "mesh.edge-a.dns.stats own");
    }, 10_000, "edge-a's event at the hub");

    const remoteKv = await new Kvm(jetstream(a, { domain: "hub", timeout: 5_000 })).open("mesh-nodes");
    await remoteKv.put("edge-a", "record-a");
    expect((await nodesKv.get("edge-a"))?.string()).toBe("record-a");

    const mirror = await openCatalogMirror({ connection: a, node: "edge-a" } as Bus);
    const mirrored = await eventually(async () => (await mirror.get("services.shop.web"))?.string(), 15_000, "the catalog in edge-a's mirror");
    expect(mirrored).toBe("catalog-v1");

    a.subscribe("rpc.edge-a.status", {
      callback: (_error, message) => {
        message.respond("edge-a ok");
      },
    });
    await a.flush();
    const answer = await eventually(async () => (await publisher.request("rpc.edge-a.status", "", { timeout: 1_000 })).string(), 10_000, "rpc to edge-a");
    expect(answer).toBe("edge-a ok");
  });

  it("relays frames between two nodes, addressed and stamped with the sender", async () => {
    const a = clients.get("edge-a")!;
    const b = clients.get("edge-b")!;
    const atB = collect(b, "relay.edge-b.>");
    await b.flush();
    await eventually(async () => {
      a.publish("relay.edge-b.edge-a.ch1", "frame");
      await a.flush();
      return atB.includes("relay.edge-b.edge-a.ch1 frame");
    }, 10_000, "a relay frame from edge-a at edge-b");
  });
});

describe("the hub's leaf links, by node", () => {
  it("are named by the node each leaf logs in as: its account, preloaded at the hub's start, names it (2.9.10's /leafz gives an address)", async () => {
    // Issued before the hub started and never pushed: the accounts are the hub's preloads, in its memory only. Before,
    // names came from the resolver directory's files and these links were '127.0.0.1:port'.
    const monitor = new FabricMonitor({ bus: new Bus({ connection: publisher, node: "hub", log: silentLogger() }), log: silentLogger(), monitor: { host: "127.0.0.1", port: hub.monitorPort } });
    const named = await eventually(async () => {
      await monitor.poll();
      const remotes = monitor.links.filter((link) => link.direction === "downstream").map((link) => link.remote).sort();
      return remotes.length === 3 ? remotes : undefined;
    }, 15_000, "the hub's three leaf links");
    expect(named).toEqual(["edge-a", "edge-b", "edge-c"]);
    for (const link of monitor.links) expect(link.address).toMatch(/^127\.0\.0\.1:\d+$/);
  });
});

describe("an honest agent that oversteps is refused by its own server and says so", () => {
  it("publishing as another node: the local server answers a permission violation, the agent logs it, the hub never sees it", async () => {
    const a = await client("edge-a");
    watchPermissionErrors(a, agentLog.log, "edge-a");
    const atHub = collect(publisher, "mesh.edge-b.>");
    await publisher.flush();
    a.publish("mesh.edge-b.dns.stats", "forged by edge-a");
    await eventually(() => agentLog.lines().includes("may not publish mesh.edge-b.dns.stats"), 5_000, "the denial in the agent's log");
    expect(leaves.get("edge-a")!.log()).toMatch(/Publish Violation.*mesh\.edge-b\.dns\.stats/);
    // A marker published after the forgery arrives; the forgery did not.
    const own = collect(publisher, "mesh.edge-a.>");
    await publisher.flush();
    await eventually(async () => {
      clients.get("edge-a")!.publish("mesh.edge-a.marker", "after");
      return own.length > 0;
    }, 5_000, "a later own event");
    expect(atHub).toEqual([]);
  });

  it("writing another node's record or the catalog: refused, and turned into a clear NATS_DENIED message", async () => {
    const a = clients.get("edge-a")!;
    const js = jetstream(a, { domain: "hub", timeout: 2_000 });
    const remoteNodes = await new Kvm(js).open("mesh-nodes");
    const remoteCatalog = await new Kvm(js).open("mesh-catalog");
    for (const [kv, key, action, subject] of [
      [remoteNodes, "edge-b", "write node record edge-b", "$KV.mesh-nodes.edge-b"],
      [remoteCatalog, "services.shop.web", "write the catalog", "$KV.mesh-catalog.services.shop.web"],
    ] as const) {
      const error = await kv.put(key, "forged").then(
        () => undefined,
        (failure: unknown) => explainDenial(failure, { node: "edge-a", action, subject }),
      );
      expect(error?.code, error?.message).toBe("NATS_DENIED");
      agentLog.log.warn({ node: "edge-a", denied: true }, error!.message);
    }
    expect(agentLog.lines()).toContain("may not write the catalog");
    expect(agentLog.lines()).toContain("may not write node record edge-b");
    expect((await catalog.get("services.shop.web"))?.string()).toBe("catalog-v1");
    expect(await nodesKv.get("edge-b")).toBeNull();
  });
});

describe("a stolen node speaking the leafnode protocol itself reaches only its own subjects", () => {
  const bundle = () => join(keys, "nodes", "edge-a");
  const tlsFiles = () => ({ cert: join(bundle(), "node.crt"), key: join(bundle(), "node.key"), ca: join(bundle(), "ca.crt") });

  it("with the node's credentials: cannot publish as another node, write the catalog or another record, purge, or forge relay frames; the hub logs each attempt", async () => {
    const rogue = await connectRogueLeaf({ port: hub.leafPort, creds: join(bundle(), "node.creds"), ...tlsFiles() });
    try {
      expect(rogue.errors).toEqual([]);
      const b = clients.get("edge-b")!;
      const atHub = collect(publisher, "mesh.>");
      const relayAtB = collect(b, "relay.edge-b.>");
      await Promise.all([publisher.flush(), b.flush()]);
      rogue.subscribe("_INBOX_edge-a.>");
      rogue.subscribe("relay.edge-b.>");

      rogue.publish("mesh.edge-b.dns.stats", "forged");
      rogue.publish("$JS.hub.API.$KV.mesh-catalog.services.shop.web", "forged", "_INBOX_edge-a.r1");
      rogue.publish("$KV.mesh-catalog.services.shop.web", "forged", "_INBOX_edge-a.r2");
      rogue.publish("$JS.hub.API.$KV.mesh-nodes.edge-b", "forged", "_INBOX_edge-a.r3");
      rogue.publish("$JS.hub.API.STREAM.PURGE.KV_mesh-catalog", "{}", "_INBOX_edge-a.r4");
      rogue.publish("relay.edge-b.edge-c.ch9", "forged as edge-c");
      // Same connection, same order: once this marker is at the hub, every forgery above was processed.
      rogue.publish("mesh.edge-a.marker", "after the forgeries");
      await eventually(() => atHub.includes("mesh.edge-a.marker after the forgeries"), 10_000, "the rogue's own marker at the hub");

      const expected = ["publishes as node 'edge-b'", "writes the catalog", "writes the node record of 'edge-b'", "calls JetStream STREAM.PURGE.KV_mesh-catalog on the catalog"];
      await eventually(() => expected.every((text) => hubLog.lines().includes(text)), 10_000, `the hub's log to name each attempt: ${expected.join("; ")}`);
      expect(hubLog.lines()).toContain("denied: node 'edge-a'");

      expect(atHub.filter((line) => !line.startsWith("mesh.edge-a."))).toEqual([]);
      expect(relayAtB.filter((line) => line.includes("forged"))).toEqual([]);
      expect((await catalog.get("services.shop.web"))?.string()).toBe("catalog-v1");
      expect(await nodesKv.get("edge-b")).toBeNull();
      expect((await catalog.status()).values).toBe(1);
      // edge-c relays to edge-b: edge-b gets it, the rogue subscribed to relay.edge-b.> gets nothing
      const c = clients.get("edge-c")!;
      await eventually(async () => {
        c.publish("relay.edge-b.edge-c.ch2", "secret for b");
        await c.flush();
        return relayAtB.includes("relay.edge-b.edge-c.ch2 secret for b");
      }, 10_000, "edge-c's frame at edge-b");
      expect(rogue.received.filter((message) => message.subject.startsWith("relay."))).toEqual([]);
    } finally {
      rogue.close();
    }
  });

  it("even a user of the node's account without any permission limits reads no other node's relay frames and forges nothing", async () => {
    // The worst case docs/nats-facts.md warns about: user permissions not enforced. Only the account boundary is left.
    const accountSeed = readFileSync(join(keys, "accounts", "node-edge-a.seed"), "utf8").trim();
    const user = createUser();
    const jwt = await encodeUser("edge-a-unlimited", user, accountSeed, { subs: -1, data: -1, payload: -1 }, { algorithm: "ed25519-nkey" as Algorithms });
    const credsFile = join(base, "unlimited.creds");
    writeSecretFile(credsFile, fmtCreds(jwt, user));
    const rogue = await connectRogueLeaf({ port: hub.leafPort, creds: credsFile, ...tlsFiles() });
    try {
      for (const subject of ["relay.>", "mesh.>", "_INBOX_edge-b.>", "$KV.>", "rpc.>"]) rogue.subscribe(subject);
      const b = clients.get("edge-b")!;
      const c = clients.get("edge-c")!;
      const relayAtB = collect(b, "relay.edge-b.>");
      const atHub = collect(publisher, "mesh.>");
      await Promise.all([b.flush(), publisher.flush()]);
      rogue.publish("mesh.edge-b.dns.stats", "forged");
      rogue.publish("relay.edge-b.edge-c.ch9", "forged as edge-c");
      rogue.publish("mesh.edge-a.marker", "unlimited marker");
      await eventually(() => atHub.includes("mesh.edge-a.marker unlimited marker"), 10_000, "the unlimited rogue's marker at the hub");
      await eventually(async () => {
        c.publish("relay.edge-b.edge-c.ch3", "secret for b");
        b.publish("mesh.edge-b.dns.stats", "b's own event");
        await Promise.all([c.flush(), b.flush()]);
        return relayAtB.includes("relay.edge-b.edge-c.ch3 secret for b") && atHub.includes("mesh.edge-b.dns.stats b's own event");
      }, 10_000, "edge-c's frame at edge-b and edge-b's event at the hub");
      expect(rogue.errors).toEqual([]);
      expect(rogue.received.map((message) => message.subject).filter((subject) => !subject.startsWith("mesh.edge-a."))).toEqual([]);
      expect(relayAtB.filter((line) => line.includes("forged"))).toEqual([]);
      expect(atHub.filter((line) => line.includes("forged"))).toEqual([]);
    } finally {
      rogue.close();
    }
  });

  it("the node's credentials do not open an ordinary client connection to the hub", async () => {
    const bundle = join(keys, "nodes", "edge-a");
    const { credsAuthenticator } = await import("@nats-io/transport-node");
    const error = await connect({
      servers: hub.clientUrl,
      authenticator: credsAuthenticator(readFileSync(join(bundle, "node.creds"))),
      tls: { certFile: join(bundle, "node.crt"), keyFile: join(bundle, "node.key"), caFile: join(bundle, "ca.crt") },
      reconnect: false,
    }).then(
      (connection) => connection.close().then(() => undefined),
      (failure: Error) => failure,
    );
    expect(error?.message).toMatch(/Authorization Violation/i);
  });
});

describe("revocation", () => {
  it("cuts a relaying node within seconds without restarting the hub; the others go on", async () => {
    const b = clients.get("edge-b")!;
    const c = clients.get("edge-c")!;
    const a = clients.get("edge-a")!;
    const atB = collect(b, "relay.edge-b.>");
    await b.flush();
    let sequence = 0;
    // edge-c streams to edge-b until the end of the test
    const streaming = setInterval(() => c.publish("relay.edge-b.edge-c.stream", String(sequence++)), 20);
    try {
      await eventually(() => atB.some((line) => line.startsWith("relay.edge-b.edge-c.stream")), 10_000, "edge-c's stream at edge-b");
      const out = { text: "" };
      const stream = new Writable({ write(chunk, _encoding, done) { out.text += chunk.toString(); done(); } });
      const code = await runKeysCommand(["revoke", "--dir", keys, "--node", "edge-c", "--hub", hub.clientUrl], { stdout: stream, stderr: stream });
      expect(code, out.text).toBe(0);
      expect(out.text).toMatch(/pushed account .* to hub hub/);
      const revokedAt = Date.now();

      await eventually(async () => (await leafConnections(leaves.get("edge-c")!)) === 0, 5_000, "edge-c's leaf connection to close");
      const countAtCut = atB.filter((line) => line.startsWith("relay.edge-b.edge-c.stream")).length;
      expect(Date.now() - revokedAt).toBeLessThan(5_000);
      // edge-c's leaf retries and is refused every time: its log says so
      await eventually(() => /Authorization Violation/i.test(leaves.get("edge-c")!.log()), 10_000, "edge-c's leaf to log the refusal");
      // the others are unaffected: edge-a still relays to edge-b
      await eventually(async () => {
        a.publish("relay.edge-b.edge-a.after", "still here");
        await a.flush();
        return atB.includes("relay.edge-b.edge-a.after still here");
      }, 5_000, "edge-a's frame after the revocation");
      expect(await leafConnections(leaves.get("edge-a")!)).toBe(1);
      expect(await leafConnections(leaves.get("edge-b")!)).toBe(1);
      // nothing more from edge-c reached edge-b after the cut (one in flight at most)
      expect(atB.filter((line) => line.startsWith("relay.edge-b.edge-c.stream")).length).toBeLessThanOrEqual(countAtCut + 1);
      // the same hub process all along
      expect(hub.log().match(/Server is ready/g)?.length).toBe(1);
      // the keys host says why edge-c's credentials are refused
      const jwt = /-----BEGIN NATS USER JWT-----\s*(\S+)/.exec(readFileSync(join(keys, "nodes", "edge-c", "node.creds"), "utf8"))![1];
      expect(explainUserKey(keys, jwt)).toMatch(/node 'edge-c' .* were revoked at/);
      expect(readKeyState(keys).nodes["edge-c"].user).toBeUndefined();
    } finally {
      clearInterval(streaming);
    }
  });
});
