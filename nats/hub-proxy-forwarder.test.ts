/**
 * The hub-proxy forwarder on loopback, against a real forward proxy (tinyproxy), a real secured hub and a real leaf
 * nats-server, and against proxies that misbehave as no real one does on demand (scripted sockets): whatever a proxy
 * answers, the forwarder says what it was, naming the proxy and the hub, the leaf sees a reset, and the process goes on.
 * Root (tinyproxy resolves hub-1.example.net in a mount namespace of its own: test/support/tinyproxy.ts).
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { loadNodeSecurity } from "../trust/security.ts";
import { leafRemoteUrls } from "../roles/hub-proxy-routes.ts";
import { capturedLog } from "../test/support/log-lines.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { tempDir } from "../test/support/processes.ts";
import { startTinyproxy, type Tinyproxy } from "../test/support/tinyproxy.ts";
import { leafConnections, startNatsServer, startSecuredHub, stopAllServers, type SecuredHub } from "../test/support/trust-servers.ts";
import { parseHubProxy } from "./hub-proxy.ts";
import { startHubForwarders, type HubForwarders } from "./hub-proxy-forwarder.ts";
import { renderLeafConfig } from "./render.ts";

let keys: string;
let hub: SecuredHub;
let proxy: Tinyproxy;
const dir = tempDir();
const started: HubForwarders[] = [];
const scripted: Server[] = [];

beforeAll(async () => {
  keys = join(dir, "keys");
  // The hubs' certificate names hub-1.example.net only: no address, no localhost.
  await initKeys({ dir: keys, hubHosts: ["hub-1.example.net"] });
  await issueNode({ dir: keys, node: "edge-f" });
  hub = await startSecuredHub({ keysDir: keys, dir });
  proxy = await startTinyproxy({ dir, port: await freePort(), basicAuth: { user: "leafmesh", password: "s3cret" }, hosts: { "hub-1.example.net": "127.0.0.1", "hub-2.example.net": "127.0.0.1" } });
}, 60_000);

afterAll(async () => {
  for (const forwarders of started) await forwarders.stop();
  for (const server of scripted) server.close();
  await stopAllServers();
  await proxy?.stop();
});

async function forwardersFor(proxyUrl: string, hubName = "hub-1.example.net", port = hub.leafPort) {
  const { log, lines } = capturedLog();
  const forwarders = await startHubForwarders({ proxy: parseHubProxy(proxyUrl), upstreams: [`tls://${hubName}:${port}`], log, replyTimeoutMs: 500 });
  started.push(forwarders);
  return { forwarders, lines, via: new URL(forwarders.routes[0].via) };
}

/** One connection as the leaf makes it: how it ended (reset, or a clean end) and what came through. */
function dialForwarder(via: URL): Promise<{ end: "reset" | "end"; received: string }> {
  return new Promise((resolve) => {
    let received = "";
    const socket = connect({ host: via.hostname, port: Number(via.port) });
    socket.on("data", (chunk) => (received += chunk.toString("latin1")));
    socket.once("error", () => resolve({ end: "reset", received }));
    socket.once("end", () => resolve({ end: "end", received }));
  });
}

describe("through a real forward proxy (tinyproxy)", () => {
  it("a proxy that wants a user and password: said with the fix, and the leaf's connection reset", async () => {
    const { forwarders, via, lines } = await forwardersFor(proxy.url);
    expect((await dialForwarder(via)).end).toBe("reset");
    const problem = `the proxy ${proxy.url} asks for a user and password (407 Proxy Authentication Required) for CONNECT hub-1.example.net:${hub.leafPort}: give them in --hub-proxy http://USER:PASSWORD@${proxy.url.slice(7)}`;
    expect(forwarders.problem()).toBe(problem);
    expect(forwarders.status().routes[0]).toMatchObject({ hub: `tls://hub-1.example.net:${hub.leafPort}`, problem: { text: problem }, open: 0 });
    await eventually(() => lines.some((line) => line.msg === problem && line.level === 50), 2_000, "the 407 in the log");
    // Once per change, not per attempt.
    await dialForwarder(via);
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines.filter((line) => line.msg === problem)).toHaveLength(1);
  });

  it("a wrong password: the user named, the password not", async () => {
    const { forwarders, via } = await forwardersFor(proxy.url.replace("//", "//leafmesh:wrong@"));
    expect((await dialForwarder(via)).end).toBe("reset");
    expect(forwarders.problem()).toMatch(/^the proxy http:\/\/leafmesh:\*\*\*@127\.0\.0\.1:\d+ refused the user 'leafmesh' given in --hub-proxy \((407 Proxy Authentication Required|401 Unauthorized)\)/);
    expect(forwarders.problem()).not.toContain("wrong");
  });

  it("a proxy that allows CONNECT only to 443: the 403 said, with the hub on 443 as the way out", async () => {
    const strict = await startTinyproxy({ dir, port: await freePort(), connectPorts: [443] });
    try {
      const { forwarders, via } = await forwardersFor(strict.url);
      expect((await dialForwarder(via)).end).toBe("reset");
      expect(forwarders.problem()).toMatch(/refused CONNECT hub-1.example.net:\d+ \(403 Access violation\).*allow CONNECT only to port 443.*--leaf-listen 0.0.0.0:443/);
    } finally {
      await strict.stop();
    }
  });

  it("the user and password right: a real leaf attaches through the proxy, verifying the hub by its name", { timeout: 30_000 }, async () => {
    const { forwarders } = await forwardersFor(proxy.url.replace("//", "//leafmesh:s3cret@"));
    const leaf = await startProxiedLeaf("edge-f", forwarders);
    await eventually(async () => (await leafConnections(hub)) > 0, 15_000, "the leaf through the proxy").catch((error: Error) => {
      throw new Error(`${error.message}\n${leaf.log().slice(-2000)}`, { cause: error });
    });
    expect(proxy.log()).toContain(`CONNECT hub-1.example.net:${hub.leafPort}`);
    expect(forwarders.problem()).toBeUndefined();
    expect(forwarders.status().routes[0].open).toBe(1);
    await leaf.stop();
  });

  it("a hub that shows a certificate not naming the host asked for is refused: verification stays on", { timeout: 30_000 }, async () => {
    // The same hub, asked for as hub-2.example.net, which its certificate does not name.
    const { forwarders } = await forwardersFor(proxy.url.replace("//", "//leafmesh:s3cret@"), "hub-2.example.net");
    const leaf = await startProxiedLeaf("edge-f", forwarders, "edge-f-wrong-name");
    await eventually(() => /x509: certificate is valid for hub-1.example.net, not hub-2.example.net/.test(leaf.log()), 15_000, "the leaf to refuse the hub's certificate");
    expect(await leafConnections(hub)).toBe(0);
    await leaf.stop();
  });
});

describe("proxies that misbehave", () => {
  /** A "proxy" that reads the CONNECT and then does `behave` with the socket. */
  async function scriptedProxy(behave: (socket: Socket) => void): Promise<string> {
    const server = createServer((socket) => {
      socket.on("error", () => undefined);
      socket.once("data", () => behave(socket));
    });
    scripted.push(server);
    const port = await freePort();
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    return `http://127.0.0.1:${port}`;
  }

  it("closing mid-reply, answering garbage, an endless head, silence, a closed port: each said, and the forwarder goes on", async () => {
    const cases: [string, (socket: Socket) => void, RegExp][] = [
      ["closes mid-CONNECT", (socket) => socket.end("HTTP/1.1 200 Connection est"), /closed the connection before answering CONNECT hub-1.example.net:/],
      ["resets mid-CONNECT", (socket) => socket.resetAndDestroy(), /closed the connection before answering CONNECT/],
      ["answers garbage", (socket) => socket.write("SSH-2.0-OpenSSH_9.2p1\r\n"), /answered CONNECT hub-1.example.net:\d+ with something that is not HTTP \("SSH-2.0-OpenSSH_9.2p1.."\): is 127.0.0.1:\d+ an HTTP proxy\?/],
      ["an endless head", (socket) => socket.write(`HTTP/1.1 200 OK\r\nX: ${"a".repeat(20_000)}`), /a reply head longer than 16384 bytes/],
      ["never answers", () => undefined, /did not answer CONNECT hub-1.example.net:\d+ within 0.5 s/],
    ];
    for (const [what, behave, said] of cases) {
      const { forwarders, via } = await forwardersFor(await scriptedProxy(behave));
      expect((await dialForwarder(via)).end, what).toBe("reset");
      expect(forwarders.problem(), what).toMatch(said);
    }
    const { forwarders, via } = await forwardersFor(`http://127.0.0.1:${await freePort()}`);
    expect((await dialForwarder(via)).end).toBe("reset");
    expect(forwarders.problem()).toMatch(/^cannot reach the proxy http:\/\/127.0.0.1:\d+ \(ECONNREFUSED\) to CONNECT hub-1.example.net/);

    // A tunnel cut in the middle reaches the leaf as a reset, never as a clean end.
    const cutting = await scriptedProxy((socket) => {
      socket.write("HTTP/1.1 200 Connection established\r\n\r\nINFO {}\r\n");
      setTimeout(() => socket.resetAndDestroy(), 50);
    });
    const cut = await forwardersFor(cutting);
    expect(await dialForwarder(cut.via)).toEqual({ end: "reset", received: "INFO {}\r\n" });
    expect(cut.forwarders.problem()).toBeUndefined();
  });
});

function startProxiedLeaf(node: string, forwarders: HubForwarders, name = node) {
  const security = loadNodeSecurity(keys, node);
  return startNatsServer({
    name,
    dir,
    config: (ports) =>
      renderLeafConfig({
        serverName: name,
        storeDir: join(dir, `${name}-js`),
        client: { host: "127.0.0.1", port: ports.client },
        monitor: { host: "127.0.0.1", port: ports.monitor },
        domain: node,
        maxMemoryStore: 64 << 20,
        maxFileStore: 64 << 20,
        upstreams: leafRemoteUrls(forwarders.routes.map((route) => route.via), forwarders.routes),
        remoteSecurity: security.leafRemoteFragment,
        security: security.localAuthFragment,
      }),
  });
}
