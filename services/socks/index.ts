/**
 * services/socks: a SOCKS5 proxy on the agent, as EdgeMesh has, for operators:
 * reach any node by name (its own loopback, through the tunnel: `ssh` to an edge
 * node behind NAT) and any Service by name or cluster IP (one of its ready
 * endpoints), from wherever the proxy is reachable.
 *
 * ```ts
 * import { createSocksActor } from "./services/socks/index.ts";
 * const socks = createSocksActor({ bus, feed, log, node: "edge-a", listen: { host: "127.0.0.1", port: 1080 }, dialer: tunnel, knownNodes: () => tunnel.nodes });
 * await socks.start();
 * // curl --socks5-hostname 127.0.0.1:1080 http://web.shop.svc.cluster.local/
 * // ssh -o ProxyCommand='nc -X 5 -x 127.0.0.1:1080 %h %p' root@edge-b
 * await socks.stop();
 * ```
 */
import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import { pipeline, type Duplex } from "node:stream";
import { createActor, setup } from "xstate";
import type { CatalogFeed } from "../../bus/catalog-feed.ts";
import type { Bus } from "../../bus/bus.ts";
import { linkActorToBus, type ActorLink } from "../../bus/actor-link.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { buildMethodChoice, buildReply, parseGreeting, parseRequest, replyCodes } from "./protocol.ts";
import { resolveSocksTarget, type SocksTarget } from "./resolve.ts";

export { resolveSocksTarget, type SocksTarget } from "./resolve.ts";
export { parseGreeting, parseRequest } from "./protocol.ts";

export interface SocksOptions {
  bus?: Bus;
  feed: CatalogFeed;
  log: Logger;
  node: string;
  listen: { host: string; port: number };
  /** The tunnel's stream opener: endpoints and nodes elsewhere are reached through it. */
  dialer?: { openStream(node: string, target: { host: string; port: number; protocol: "TCP" | "UDP" }): Promise<Duplex> };
  /** Node names the tunnel knows (so `edge-b` is a node, not a host name to look up). */
  knownNodes?: () => ReadonlySet<string>;
  /** @default "cluster.local" */
  clusterDomain?: string;
  /** @default 10_000 — a client that has not finished its request by then is closed. */
  handshakeTimeoutMs?: number;
  /** @default 5_000 */
  connectTimeoutMs?: number;
}

const socksMachine = setup({ types: { events: {} as { type: "LISTENING" } | { type: "STOP" } } }).createMachine({
  id: "socks",
  initial: "starting",
  states: { starting: { on: { LISTENING: "serving", STOP: "stopped" } }, serving: { on: { STOP: "stopped" } }, stopped: { type: "final" } },
});

export function createSocksActor(options: SocksOptions) {
  const actor = createActor(socksMachine).start();
  const log = options.log;
  const counters = new Map<string, number>();
  const count = (key: string) => counters.set(key, (counters.get(key) ?? 0) + 1);
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let link: ActorLink | undefined;
  let roundRobin = 0;

  const dial = async (target: Exclude<SocksTarget, { kind: "refused" }>): Promise<Duplex> => {
    const remoteNode = target.kind === "node" ? target.node : target.kind === "endpoint" && target.node && target.node !== options.node ? target.node : undefined;
    if (remoteNode) {
      if (!options.dialer) throw new LeafmeshError("TUNNEL_FAILED", `node ${remoteNode} is reached through the tunnel, which is off on this agent (--psk or --keys)`);
      return options.dialer.openStream(remoteNode, { host: target.host, port: target.port, protocol: "TCP" });
    }
    return new Promise((resolve, reject) => {
      const socket = netConnect({ host: target.host, port: target.port, timeout: options.connectTimeoutMs ?? 5_000 });
      socket.once("connect", () => {
        socket.setTimeout(0);
        resolve(socket);
      });
      socket.once("timeout", () => socket.destroy(new Error(`connect to ${target.host}:${target.port} timed out`)));
      socket.once("error", reject);
    });
  };

  const handle = (client: Socket) => {
    sockets.add(client);
    client.once("close", () => sockets.delete(client));
    client.on("error", () => undefined);
    client.setTimeout(options.handshakeTimeoutMs ?? 10_000, () => {
      count("handshake timeout");
      client.destroy();
    });
    let buffer = new Uint8Array(0);
    let stage: "greeting" | "request" | "connecting" = "greeting";
    const fail = (reason: string, reply?: number) => {
      count(reason.split(":")[0]);
      log.debug({ reason, client: client.remoteAddress }, "SOCKS request refused");
      if (reply !== undefined) client.end(buildReply(reply));
      else client.destroy();
    };
    const onData = (chunk: Buffer) => {
      if (buffer.length + chunk.length > 600) return fail("request too long");
      buffer = Buffer.concat([buffer, chunk]);
      if (stage === "greeting") {
        const greeting = parseGreeting(buffer);
        if (greeting.status === "need") return;
        if (greeting.status === "error") return fail(greeting.reason);
        client.write(buildMethodChoice(greeting.value.methods));
        if (!greeting.value.methods.includes(0x00)) return fail("no acceptable method");
        buffer = buffer.subarray(greeting.length);
        stage = "request";
      }
      if (stage === "request") {
        const request = parseRequest(buffer);
        if (request.status === "need") return;
        if (request.status === "error") return fail(request.reason, request.reply);
        stage = "connecting";
        client.off("data", onData);
        client.pause();
        const early = buffer.subarray(request.length);
        const target = resolveSocksTarget(options.feed.reader, request.value.host, request.value.port, {
          clusterDomain: options.clusterDomain ?? "cluster.local",
          node: options.node,
          knownNodes: options.knownNodes?.() ?? new Set(),
          pick: (candidates) => candidates[roundRobin++ % candidates.length],
        });
        if (target.kind === "refused") return fail(`refused: ${target.reason}`, replyCodes.hostUnreachable);
        dial(target).then(
          (upstream) => {
            count("connected");
            client.setTimeout(0);
            client.write(buildReply(replyCodes.succeeded));
            if (early.length > 0) upstream.write(early);
            // Both directions with backpressure; either side's end half-closes the other.
            pipeline(client, upstream, () => undefined);
            pipeline(upstream, client, () => undefined);
            client.resume();
          },
          (error: Error) => {
            log.info({ target, err: error.message }, "SOCKS connect failed");
            fail(`connect failed: ${error.message}`, /refused/i.test(error.message) ? replyCodes.connectionRefused : replyCodes.hostUnreachable);
          },
        );
      }
    };
    client.on("data", onData);
  };

  return {
    actor,
    get address() {
      const address = server?.address();
      return typeof address === "object" && address ? { host: address.address, port: address.port } : undefined;
    },
    stats: () => Object.fromEntries(counters),
    async start() {
      server = createServer(handle);
      await new Promise<void>((resolve, reject) => {
        server!.once("error", (error: NodeJS.ErrnoException) =>
          reject(new LeafmeshError("CONFIG_INVALID", `--socks ${options.listen.host}:${options.listen.port}: ${error.code === "EADDRINUSE" ? "the address is in use" : error.message}`, { cause: error })),
        );
        server!.listen(options.listen.port, options.listen.host, () => resolve());
      });
      actor.send({ type: "LISTENING" });
      if (options.bus) link = linkActorToBus({ bus: options.bus, actorName: "socks", actor, detail: () => Object.fromEntries(counters) });
      log.info({ listen: this.address }, "SOCKS5 proxy listening");
    },
    async stop() {
      link?.stop();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      actor.send({ type: "STOP" });
    },
  };
}

export type SocksActor = ReturnType<typeof createSocksActor>;
