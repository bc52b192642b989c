/**
 * The mesh bus: typed publish and subscribe of `mesh.>` events over one NATS
 * connection, plus request/reply helpers under `rpc.>`. A malformed payload from
 * the wire is dropped and counted by reason, and logged once per subject.
 *
 * ```ts
 * const bus = new Bus({ connection, node: "edge-a", log });
 * bus.publish("dns", "stats", { queries: 10 });
 * const stop = bus.subscribe({ actor: "controller", event: "catalog" }, (event) => index.apply(...));
 * ```
 */
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "../lib/log.ts";
import { decodeEvent, encodeEvent, isMeshEventName, type MeshEventName, type MeshEventPayload } from "./events.ts";
import { meshPattern, meshSubject, parseMeshSubject, rpcSubject, type ActorName } from "./subjects.ts";
import { LeafmeshError } from "../lib/errors.ts";
import type { RpcMethod } from "./rpc.ts";

export interface ReceivedEvent<E extends MeshEventName> {
  node: string;
  actor: string;
  event: E;
  payload: MeshEventPayload<E>;
  subject: string;
}

export interface BusOptions {
  connection: NatsConnection;
  node: string;
  log: Logger;
}

export class Bus {
  readonly connection: NatsConnection;
  readonly node: string;
  readonly #log: Logger;
  readonly #subscriptions = new Set<Subscription>();
  /** Dropped incoming messages by reason. */
  readonly drops = new Map<string, number>();
  readonly #loggedDrops = new Set<string>();

  constructor(options: BusOptions) {
    this.connection = options.connection;
    this.node = options.node;
    this.#log = options.log;
  }

  /** Publishes an event of this node, checked against its schema; a closed or draining connection drops it (counted). */
  publish<E extends MeshEventName>(actor: ActorName, event: E, payload: MeshEventPayload<E>): void {
    if (this.connection.isClosed() || this.connection.isDraining()) {
      this.#drop(this.connection.isClosed() ? "connection closed" : "connection draining", meshSubject(this.node, actor, event));
      return;
    }
    this.#send(meshSubject(this.node, actor, event), encodeEvent(event, payload));
  }

  /**
   * Publishes an event its caller encoded as JSON from parts already known to fit the event's schema: a payload
   * spliced from pieces encoded once, such as traffic's listener bindings or a catalog event's KV value
   * (encodeCatalogEvent), as text or as its UTF-8 bytes (a listener generation's pages), which go out as they are.
   */
  publishJson(actor: ActorName, event: MeshEventName, json: string | Uint8Array): void {
    if (this.connection.isClosed() || this.connection.isDraining()) {
      this.#drop(this.connection.isClosed() ? "connection closed" : "connection draining", meshSubject(this.node, actor, event));
      return;
    }
    this.#send(meshSubject(this.node, actor, event), json);
  }

  /**
   * An event goes out, or is dropped (counted, said once per subject) when the client refuses it: one over the
   * server's max_payload (a catalog event wraps its object's KV value, which may itself be up to that size). nats.js
   * measures the encoded payload against the server's INFO and throws, from inside the publisher's own work (the
   * controller's flush of a batch): unhandled, it ended the agent. It is not measured here again (catalog events are
   * 20,000 at a fresh agent's start).
   */
  #send(subject: string, payload: string | Uint8Array): void {
    try {
      this.connection.publish(subject, payload);
    } catch (cause) {
      this.#drop(/max_payload/.test(String((cause as Error)?.message)) ? "over the server's max_payload" : "refused by the client", subject, cause);
    }
  }

  /** Subscribes to events of one name, from this node unless `node` says otherwise ("*" for all). */
  subscribe<E extends MeshEventName>(
    filter: { node?: string; actor?: ActorName; event: E },
    handler: (event: ReceivedEvent<E>) => void,
  ): () => void {
    const subject = meshPattern({ node: filter.node ?? this.node, actor: filter.actor, event: filter.event });
    const subscription = this.connection.subscribe(subject, {
      callback: (error, message) => {
        if (error) {
          this.#log.warn({ err: error, subject }, "bus subscription failed");
          return;
        }
        const parts = parseMeshSubject(message.subject);
        if (!parts) return this.#drop("bad subject", message.subject);
        let payload: MeshEventPayload<E>;
        try {
          payload = decodeEvent(filter.event, message.data);
        } catch (cause) {
          this.#drop("bad payload", message.subject, cause);
          return;
        }
        handler({ ...parts, event: filter.event, payload, subject: message.subject });
      },
    });
    return this.#track(subscription);
  }

  /** Every event under `mesh.>` matching the pattern, decoded when its name is known. */
  subscribeRaw(pattern: string, handler: (subject: string, payload: unknown) => void): () => void {
    const subscription = this.connection.subscribe(pattern, {
      callback: (error, message) => {
        if (error) return;
        const parts = parseMeshSubject(message.subject);
        let payload: unknown;
        try {
          payload = JSON.parse(new TextDecoder().decode(message.data));
          if (parts && isMeshEventName(parts.event)) payload = decodeEvent(parts.event, message.data);
        } catch {
          payload = { undecodable: new TextDecoder().decode(message.data).slice(0, 200) };
        }
        handler(message.subject, payload);
      },
    });
    return this.#track(subscription);
  }

  /**
   * Serves `rpc.<node>.<method>` (bus/rpc.ts): JSON in, checked by the method's parser, JSON out; a
   * thrown error (a request that does not parse included) becomes `{ error }`, which rpcRequest
   * throws at the caller.
   */
  serve<Request, Reply>(method: RpcMethod<Request, Reply>, handler: (request: Request) => Promise<Reply> | Reply): () => void {
    const subject = rpcSubject(this.node, method.name);
    const subscription = this.connection.subscribe(subject, {
      callback: (error, message: Msg) => {
        if (error) return;
        void (async () => {
          let reply: unknown;
          try {
            const text = new TextDecoder().decode(message.data);
            reply = await handler(method.parseRequest(text ? JSON.parse(text) : undefined));
          } catch (cause) {
            reply = { error: cause instanceof Error ? cause.message : String(cause) };
          }
          if (message.reply) message.respond(new TextEncoder().encode(JSON.stringify(reply ?? null)));
        })();
      },
    });
    return this.#track(subscription);
  }

  /** Closes every subscription this bus made (not the connection). */
  close(): void {
    for (const subscription of this.#subscriptions) subscription.unsubscribe();
    this.#subscriptions.clear();
  }

  #track(subscription: Subscription): () => void {
    this.#subscriptions.add(subscription);
    return () => {
      subscription.unsubscribe();
      this.#subscriptions.delete(subscription);
    };
  }

  #drop(reason: string, subject: string, cause?: unknown): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
    const once = `${reason}:${subject}`;
    if (this.#loggedDrops.has(once)) return;
    this.#loggedDrops.add(once);
    // A closed or draining connection is a stop under way (the bus's connection reconnects otherwise): an event
    // then has nowhere to go and that is no one's fault. Said at warn, it was a false alarm at every stop.
    const level = reason === "connection closed" || reason === "connection draining" ? "debug" : "warn";
    this.#log[level]({ reason, subject, err: cause }, "bus message dropped (logged once per subject and reason)");
  }
}

/** A method's handler failed (or refused the request): its reason, as the serving side said it. */
export class RpcError extends LeafmeshError {
  readonly method: string;
  readonly node: string;

  constructor(method: string, node: string, reason: string) {
    super("NOT_RUNNING", `${node} answered ${method} with an error: ${reason}`);
    this.method = method;
    this.node = node;
  }
}

/** Sends a request to `rpc.<node>.<method>` and returns the reply; throws RpcError when the handler failed. */
export async function rpcRequest<Request, Reply>(connection: NatsConnection, node: string, method: RpcMethod<Request, Reply>, request?: Request, timeoutMs = 5000): Promise<Reply> {
  const reply = await connection.request(
    rpcSubject(node, method.name),
    new TextEncoder().encode(request === undefined ? "" : JSON.stringify(request)),
    { timeout: timeoutMs },
  );
  const body = JSON.parse(new TextDecoder().decode(reply.data)) as unknown;
  if (body !== null && typeof body === "object" && "error" in body && Object.keys(body).length === 1) throw new RpcError(method.name, node, String((body as { error: unknown }).error));
  return body as Reply;
}
