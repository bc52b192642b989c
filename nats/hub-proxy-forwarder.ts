/**
 * A node whose network lets nothing out but through the site's HTTP proxy reaches
 * its hubs through it: one loopback listener per upstream, which the leaf
 * nats-server's remote dials instead of the hub (nats-server 2.9.10 has no proxy
 * support for leafnode remotes). Each connection it takes becomes a CONNECT
 * through the proxy to that hub, then a plain byte pipe: the leaf's TLS runs end
 * to end through it, and the leaf verifies the hub's certificate against the
 * hub's name (render.ts keeps the hubs' own URLs in the remote for that; see
 * docs/restricted-egress.md). A proxy's refusal is said in the log once per
 * change, naming the proxy and the hub, and kept for status.
 *
 * ```ts
 * const forwarders = await startHubForwarders({ proxy: parseHubProxy(url, "--hub-proxy"), upstreams: ["tls://hub-1.example.net:443"], log });
 * forwarders.routes; // [{ hub: "tls://hub-1.example.net:443", via: "tls://127.0.0.1:40123" }]
 * await forwarders.stop();
 * ```
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import { joinStreams } from "../lib/join-streams.ts";
import type { Logger } from "../lib/log.ts";
import { connectRequest, explainProxyProblem, readConnectReply, type HubProxy } from "./hub-proxy.ts";
import type { HostPort } from "./render.ts";
import type { HubProxyRoute, HubProxyStatus } from "../bus/status.ts";

export interface HubForwarders {
  readonly routes: readonly { hub: string; via: string }[];
  /** The problems of every hub whose last CONNECT failed, one line; undefined when none. */
  problem(): string | undefined;
  status(): HubProxyStatus;
  stop(): Promise<void>;
}

export interface HubForwarderOptions {
  proxy: HubProxy;
  /** Leaf URLs of the upstreams (scheme://host:port). */
  upstreams: string[];
  log: Logger;
  /** @default 10_000 — a proxy that takes longer to open a tunnel to a hub is as good as down for a leaf (its TLS handshake times out too). */
  replyTimeoutMs?: number;
  /** @default 16 — a leaf link and relay choice's probes; more at once from loopback is no leaf's doing. */
  maxOpen?: number;
}

export async function startHubForwarders(options: HubForwarderOptions): Promise<HubForwarders> {
  const replyTimeoutMs = options.replyTimeoutMs ?? 10_000;
  const maxOpen = options.maxOpen ?? 16;
  const log = options.log;
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const routes: HubProxyRoute[] = [];
  try {
    for (const upstream of options.upstreams) {
      const url = new URL(upstream);
      const hub: HostPort = { host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port) };
      const route: HubProxyRoute = { hub: upstream, via: "", open: 0 };
      const failed = (text: string) => {
        if (route.problem?.text !== text) log.error({ proxy: options.proxy.shown, hub: upstream }, text);
        route.problem = { at: new Date().toISOString(), text };
      };
      const server = createServer((client) => {
        sockets.add(client);
        client.once("close", () => sockets.delete(client));
        // A cut leaf connection before the tunnel opened: nothing more to do than let both go.
        client.on("error", () => undefined);
        if (route.open >= maxOpen) return void client.resetAndDestroy();
        tunnel(client, hub, route, failed);
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve());
      });
      servers.push(server);
      const port = (server.address() as { port: number }).port;
      route.via = `${url.protocol}//127.0.0.1:${port}`;
      routes.push(route);
    }
  } catch (error) {
    for (const server of servers) server.close();
    throw error;
  }

  function tunnel(client: Socket, hub: HostPort, route: HubProxyRoute, failed: (text: string) => void): void {
    route.open++;
    let opened = false;
    let connected = false;
    const proxySocket = connect({ host: options.proxy.host, port: options.proxy.port });
    sockets.add(proxySocket);
    let received = Buffer.alloc(0);
    let settled = false;
    const fail = (problem: Parameters<typeof explainProxyProblem>[2]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      failed(explainProxyProblem(options.proxy, hub, problem));
      // The leaf sees a reset, as from a hub that is not there; it tries its next URL.
      proxySocket.destroy();
      client.resetAndDestroy();
    };
    const timer = setTimeout(() => fail({ kind: "timeout", ms: replyTimeoutMs }), replyTimeoutMs);
    proxySocket.once("close", () => {
      sockets.delete(proxySocket);
      route.open--;
      fail({ kind: "closed" });
    });
    // Until the tunnel is open; from then on the join (lib/join-streams.ts) carries ends and cuts both ways.
    proxySocket.on("error", (error: NodeJS.ErrnoException) => {
      if (!opened) fail(connected ? { kind: "closed" } : { kind: "unreachable", code: error.code ?? error.message });
    });
    client.once("close", () => {
      if (opened) return;
      settled = true;
      clearTimeout(timer);
      proxySocket.resetAndDestroy();
    });
    client.pause();
    proxySocket.once("connect", () => {
      connected = true;
      proxySocket.write(connectRequest(options.proxy, hub));
    });
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const reply = readConnectReply(received);
      if (reply === "more") return;
      proxySocket.off("data", onData);
      if (!reply.ok) return fail(reply.problem);
      settled = true;
      opened = true;
      clearTimeout(timer);
      received = Buffer.alloc(0);
      if (route.problem) log.info({ proxy: options.proxy.shown, hub: route.hub }, `through the proxy ${options.proxy.shown} to ${route.hub} again`);
      else if (!announced.has(route.hub)) log.info({ proxy: options.proxy.shown, hub: route.hub, via: route.via }, `the leaf reaches ${route.hub} through the proxy ${options.proxy.shown}`);
      announced.add(route.hub);
      delete route.problem;
      if (reply.rest.length > 0) client.write(reply.rest);
      // A tunnel cut in the middle is a cut for the leaf too (an RST), never a clean end; a FIN is passed on as one.
      joinStreams(client, proxySocket);
    };
    proxySocket.on("data", onData);
  }
  const announced = new Set<string>();

  return {
    routes: routes.map(({ hub, via }) => ({ hub, via })),
    problem: () => {
      const texts = routes.flatMap((route) => (route.problem ? [route.problem.text] : []));
      return texts.length > 0 ? texts.join("; ") : undefined;
    },
    status: () => ({ proxy: options.proxy.shown, routes: routes.map((route) => ({ ...route, ...(route.problem ? { problem: { ...route.problem } } : {}) })) }),
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    },
  };
}
