/**
 * services/socks: a SOCKS5 proxy on the agent, as EdgeMesh has, for operators:
 * reach any node by name (its own loopback, through the tunnel: `ssh` to an edge
 * node behind NAT) and any Service by name or cluster IP, from wherever the proxy
 * is reachable. A Service goes where the node's cluster IP sends it: the traffic
 * actor opens it (`servicePorts`, its plan and balancer), SOCKS only names it.
 *
 * ```ts
 * import { createSocksActor } from "./services/socks/index.ts";
 * const socks = createSocksActor({ bus, feed, log, node: "edge-a", listen: { host: "127.0.0.1", port: 1080 }, dialer: tunnel, servicePorts: traffic.servicePorts, knownNodes: () => tunnel.nodes });
 * await socks.start();
 * // curl --socks5-hostname 127.0.0.1:1080 http://web.shop.svc.cluster.local/
 * // ssh -o ProxyCommand='nc -X 5 -x 127.0.0.1:1080 %h %p' root@edge-b
 * await socks.stop();
 * ```
 */
import { createServer, type Server, type Socket } from "node:net";
import { connectTcp } from "../../lib/connect-tcp.ts";
import type { Duplex } from "node:stream";
import { createActor, setup } from "xstate";
import type { CatalogFeed } from "../../bus/catalog-feed.ts";
import type { ServicePortDialer, StreamDialer } from "../../bus/streams.ts";
import { refusalWhilePartitioned, type UpstreamState } from "../../bus/partition.ts";
import type { Bus } from "../../bus/bus.ts";
import { linkActorToBus, type ActorLink } from "../../bus/actor-link.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { listenAddress, listenRefused } from "../../lib/listen-errors.ts";
import { joinStreams, resetStream, type JoinedStreams } from "../../lib/join-streams.ts";
import { Admission, AdmissionRefused, type AdmissionLimits, type AdmissionTicket } from "../../lib/admission.ts";
import { BurstLog } from "../../lib/burst-log.ts";
import { systemClock } from "../../lib/clock.ts";
import { deadline } from "../../lib/socket-deadline.ts";
import type { Logger } from "../../lib/log.ts";
import { buildMethodChoice, buildReply, parseGreeting, parseRequest, replyCodes } from "./protocol.ts";
import { resolveSocksTarget, type SocksTarget } from "./resolve.ts";
import { loopbackClients, socksClients } from "./clients.ts";
import { defaultSocksLimits } from "./limits.ts";

export { resolveSocksTarget, type SocksTarget } from "./resolve.ts";
export { parseGreeting, parseRequest } from "./protocol.ts";
export { isLoopbackHost, loopbackClients, socksClients } from "./clients.ts";
export { defaultSocksLimits } from "./limits.ts";
export { registerSocksMetrics } from "./metrics.ts";

export interface SocksOptions {
  bus?: Bus;
  feed: CatalogFeed;
  log: Logger;
  node: string;
  listen: { host: string; port: number };
  /** The tunnel's stream opener: endpoints and nodes elsewhere are reached through it. */
  dialer?: StreamDialer;
  /**
   * The node's cluster-IP path (the traffic actor's `servicePorts`): every Service it proxies is opened through it, so a
   * SOCKS client is sent where a client of the cluster IP is, or refused where it is. Without it such Services are refused.
   */
  servicePorts?: ServicePortDialer;
  /** How far the node reaches: a fail-closed Service it does not proxy (headless, ExternalName) is refused while cut off, as DNS withholds its name. */
  upstream?: UpstreamState;
  /** Node names the tunnel knows (so `edge-b` is a node, not a host name to look up). */
  knownNodes?: () => ReadonlySet<string>;
  /** @default "cluster.local" */
  clusterDomain?: string;
  /** @default 10_000 — a client whose request is not finished, or whose target is not connected (tunnel streams included), by then is closed (a failure reply while connecting). */
  handshakeTimeoutMs?: number;
  /** @default 5_000 — a target on this node answers a SYN in milliseconds; 5 s covers two SYN retransmits. */
  connectTimeoutMs?: number;
  /** Admission of clients (lib/admission.ts): defaults and why in `defaultSocksLimits`. */
  limits?: Partial<AdmissionLimits>;
  /** Client addresses that may use the proxy (CIDR ranges, clients.ts); others are reset at accept. @default loopback only */
  clients?: readonly string[];
}


/** The cluster-IP path refused a Service (its reason, for the log): the client is told host unreachable. */
class ServiceRefused extends Error {}

/** "::ffff:127.0.0.1" → "127.0.0.1": the address session affinity keys on, as the cluster-IP listeners see it. */
const stripMappedPrefix = (address: string | undefined) => (address?.startsWith("::ffff:") ? address.slice(7) : (address ?? ""));

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
  const admission = new Admission({ clock: systemClock, limits: { ...defaultSocksLimits, ...options.limits } });
  const refusals = new BurstLog({ log, clock: systemClock, message: "SOCKS client refused at the door" });
  // Each client's failed target is its SOCKS reply; the log says a burst of them once (a scan through the proxy was a line per port).
  const connectFailures = new BurstLog({ log, clock: systemClock, message: "SOCKS connect failed" });
  // A refused request (no such Service, no endpoint, a policy) says its reason in the log once per burst; the client gets host unreachable.
  const requestRefusals = new BurstLog({ log, clock: systemClock, message: "SOCKS request refused" });
  const clients = socksClients(options.clients ?? loopbackClients, "--socks-clients");
  /** Client connections, from accept to close (a gauge in stats: what a leak would grow). */
  const sockets = new Set<Socket>();
  /** Dials under way, each abortable (the client hung up, or the proxy stops). */
  const dials = new Set<AbortController>();
  /** Clients joined with their upstream. */
  const joins = new Set<JoinedStreams>();
  let server: Server | undefined;
  let link: ActorLink | undefined;
  let roundRobin = 0;

  /** Opened upstream, and what to call when it ends (a Service connection is counted by the balancer till then). */
  const dial = async (target: Exclude<SocksTarget, { kind: "refused" }>, clientIp: string, signal: AbortSignal): Promise<{ upstream: Duplex; release?: () => void }> => {
    if (target.kind === "service") {
      const label = `${target.namespace}/${target.service}`;
      if (!options.servicePorts) throw new ServiceRefused(`Service ${label}: this agent has no cluster-IP proxy (the traffic actor) to route it`);
      const opened = await options.servicePorts.openServicePort({ namespace: target.namespace, service: target.service, port: target.port, clientIp }, { signal });
      if (opened.kind === "refused") throw new ServiceRefused(opened.reason);
      return { upstream: opened.stream, release: opened.release };
    }
    const remoteNode = target.kind === "node" ? target.node : target.kind === "endpoint" && target.node && target.node !== options.node ? target.node : undefined;
    if (remoteNode) {
      if (!options.dialer) throw new LeafmeshError("TUNNEL_FAILED", `node ${remoteNode} is reached through the tunnel, which is off on this agent (--psk or --keys)`);
      // A client that hangs up gives the open up in the tunnel (its queue place, its half-open stream).
      const stream = await options.dialer.openStream(remoteNode, { host: target.host, port: target.port, protocol: "TCP" }, { signal });
      if (signal.aborted) {
        resetStream(stream, new LeafmeshError("TUNNEL_FAILED", "the SOCKS client left before the stream opened"));
        throw new LeafmeshError("TUNNEL_FAILED", "the SOCKS client left before the stream opened");
      }
      return { upstream: stream };
    }
    const connectTimeoutMs = options.connectTimeoutMs ?? 5_000;
    return { upstream: await connectTcp({ host: target.host, port: target.port, timeoutMs: connectTimeoutMs, signal, what: `${target.host}:${target.port}`, client: "SOCKS client" }) };
  };

  /** Every client waits for its place first (lib/admission.ts); over a limit it is reset before any byte, the reason counted. */
  const admit = (client: Socket) => {
    // No address: the client reset before it was accepted (the kernel still hands it over). Not a stranger: said as
    // what it is, not as "client not allowed" (an operator would look for a foreign address that was never there).
    if (client.remoteAddress === undefined) {
      count("client left before accept");
      client.on("error", () => undefined);
      client.destroy();
      return;
    }
    if (!clients.allows(client.remoteAddress)) {
      // Before any byte: a stranger learns only that the port is there.
      count("refused: client not allowed");
      refusals.note("client not allowed (--socks-clients)", { client: client.remoteAddress });
      client.on("error", () => undefined);
      client.resetAndDestroy();
      return;
    }
    sockets.add(client);
    // A client's RST or hang-up is ordinary: what it cut is counted where it happens.
    client.on("error", () => undefined);
    client.pause();
    const left = new AbortController();
    const onClose = () => {
      sockets.delete(client);
      left.abort();
    };
    client.once("close", onClose);
    const address = client.remoteAddress ?? "unknown";
    admission.admit(address, left.signal).then(
      (ticket) => {
        client.off("close", onClose);
        if (client.destroyed) {
          ticket.release();
          sockets.delete(client);
          return;
        }
        client.resume();
        handle(client, ticket);
      },
      (error: unknown) => {
        const reason = error instanceof AdmissionRefused ? error.reason : "admission failed";
        if (reason === "client left while queued") return count(reason);
        count(`refused: ${reason}`);
        refusals.note(reason, { client: address, ...admission.counts });
        client.resetAndDestroy();
      },
    );
  };

  const handle = (client: Socket, ticket: AdmissionTicket) => {
    let buffer = new Uint8Array(0);
    let stage: "greeting" | "request" | "connecting" | "joined" | "refused" = "greeting";
    let dialing: AbortController | undefined;
    client.once("close", () => {
      sockets.delete(client);
      ticket.release();
      if (stage === "greeting" || stage === "request") count("client left during the handshake");
      if (dialing) {
        count("client left while connecting");
        const pending = dialing;
        dialing = undefined;
        pending.abort();
      }
    });
    // A client that half-closes before its request is done can never finish it: closed at once. Once
    // connecting, its FIN is kept and passed on to the upstream when joined (the answer still comes back).
    client.once("end", () => {
      if (stage === "greeting" || stage === "request" || stage === "refused") client.destroy();
    });
    const fail = (reason: string, reply?: number) => {
      stage = "refused";
      count(reason.split(":")[0]);
      log.debug({ reason, client: client.remoteAddress }, "SOCKS request refused");
      // RFC 1928 §6: a failure reply, then the server closes the connection.
      if (reply !== undefined) client.end(buildReply(reply));
      else client.destroy();
    };
    // Joined within handshakeTimeoutMs of accept, or closed: a stalled greeting or request, a dial that takes too
    // long, a refused client that never closes. Counted from accept, not from the last byte: a client that sends
    // a byte of its greeting every few seconds stalls as much as one that sends none, and held its place for ever.
    const liftDeadline = deadline(client, options.handshakeTimeoutMs ?? 10_000, () => {
      if (stage === "connecting") {
        const pending = dialing;
        dialing = undefined;
        pending?.abort();
        return fail("connect timed out", replyCodes.hostUnreachable);
      }
      if (stage !== "refused") {
        stage = "refused";
        count("handshake timeout");
      }
      client.destroy();
    });
    const onData = (chunk: Buffer) => {
      if (buffer.length + chunk.length > 600) return fail("request too long");
      buffer = Buffer.concat([buffer, chunk]);
      if (stage === "greeting") {
        const greeting = parseGreeting(buffer);
        if (greeting.status === "need") return;
        if (greeting.status === "error") return fail(greeting.reason);
        client.write(buildMethodChoice(greeting.value.methods));
        if (!greeting.value.methods.includes(0x00)) {
          // The 0xff choice was the answer (RFC 1928 §3): close after it, not before it is sent.
          stage = "refused";
          count("no acceptable method");
          client.off("data", onData);
          client.end();
          return;
        }
        buffer = buffer.subarray(greeting.length);
        stage = "request";
      }
      if (stage === "request") {
        const request = parseRequest(buffer);
        if (request.status === "need") return;
        client.off("data", onData);
        if (request.status === "error") return fail(request.reason, request.reply);
        stage = "connecting";
        client.pause();
        const early = buffer.subarray(request.length);
        const target = resolveSocksTarget(options.feed.reader, request.value.host, request.value.port, {
          clusterDomain: options.clusterDomain ?? "cluster.local",
          node: options.node,
          knownNodes: options.knownNodes?.() ?? new Set(),
          pick: (candidates) => candidates[roundRobin++ % candidates.length],
          withheld: options.upstream && ((service) => refusalWhilePartitioned(service, options.feed.reader.slices(service.namespace, service.name), options.upstream!)),
        });
        const refuse = (reason: string) => {
          requestRefusals.note(reason, { client: client.remoteAddress, target: `${request.value.host}:${request.value.port}` });
          fail(`refused: ${reason}`, replyCodes.hostUnreachable);
        };
        if (target.kind === "refused") return refuse(target.reason);
        const controller = new AbortController();
        dialing = controller;
        dials.add(controller);
        dial(target, stripMappedPrefix(client.remoteAddress), controller.signal).then(
          ({ upstream, release }) => {
            dials.delete(controller);
            if (dialing !== controller || client.destroyed) {
              // Gone (or timed out) while the dial went on: the upstream is reset, never left open.
              release?.();
              resetStream(upstream, new LeafmeshError("PROXY_FAILED", "the SOCKS client left before the connection was made"));
              return;
            }
            dialing = undefined;
            stage = "joined";
            count("connected");
            ticket.opened();
            liftDeadline();
            client.write(buildReply(replyCodes.succeeded));
            if (early.length > 0) upstream.write(early);
            const join = joinStreams(client, upstream, {
              onClose: (outcome) => {
                joins.delete(join);
                release?.();
                if (!outcome.complete) count(outcome.cutBy === "a" ? "stream reset by client" : outcome.cutBy === "b" ? "stream reset by target" : "stream reset by proxy");
              },
            });
            joins.add(join);
          },
          (error: Error) => {
            dials.delete(controller);
            if (dialing !== controller) return; // the client left or timed out: counted there
            dialing = undefined;
            if (error instanceof ServiceRefused) return refuse(error.message);
            const refused = /refused/i.test(error.message);
            connectFailures.note(refused ? "connection refused" : "unreachable", { target, err: error.message });
            fail(`connect failed: ${error.message}`, refused ? replyCodes.connectionRefused : replyCodes.hostUnreachable);
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
    /** Counters by reason, and gauges: clients connected, dials under way, clients joined with their upstream. */
    stats: () => ({ ...Object.fromEntries(counters), clients: sockets.size, dialing: dials.size, joined: joins.size, waiting: admission.counts.waiting }),
    async start() {
      // allowHalfOpen: a client's FIN half-closes its upstream, whose answer still reaches it.
      server = createServer({ allowHalfOpen: true, noDelay: true }, admit);
      await new Promise<void>((resolve, reject) => {
        server!.once("error", (error: NodeJS.ErrnoException) =>
          reject(listenRefused("--socks", options.listen, error) ?? new LeafmeshError("CONFIG_INVALID", `--socks ${listenAddress(options.listen)}: ${error.message}`, { cause: error })),
        );
        server!.listen(options.listen.port, options.listen.host, () => resolve());
      });
      // After listen, errors are accept failures (EMFILE when out of fds): counted; unhandled they would end the agent.
      server.on("error", (error: NodeJS.ErrnoException) => count(`accept failed: ${error.code ?? "error"}`));
      actor.send({ type: "LISTENING" });
      if (options.bus) link = linkActorToBus({ bus: options.bus, actorName: "socks", actor, detail: () => Object.fromEntries(counters) });
      log.info({ listen: this.address }, "SOCKS5 proxy listening");
    },
    async stop() {
      link?.stop();
      const stopping = new LeafmeshError("NOT_RUNNING", "the SOCKS proxy stopped");
      admission.close();
      refusals.close();
      connectFailures.close();
      requestRefusals.close();
      for (const controller of dials) controller.abort();
      for (const join of joins) join.reset(stopping);
      for (const socket of sockets) resetStream(socket, stopping);
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      actor.send({ type: "STOP" });
    },
  };
}

export type SocksActor = ReturnType<typeof createSocksActor>;
