/**
 * Payload types of the events under `mesh.>`, one schema each (lib/schema), so a
 * publisher and every subscriber agree and a malformed payload is caught at the
 * edge. Event names are the last subject token: `mesh.<node>.<actor>.<event>`.
 *
 * ```ts
 * const bytes = encodeEvent("path", { peer: "edge-b", kind: "direct", rttMs: 1.2 });
 * const payload = decodeEvent("path", bytes); // typed, or throws
 * ```
 */
import * as z from "../lib/schema/index.ts";
import { catalogObjectSchema, redactForEvent, type CatalogObject } from "./catalog.ts";
import { natTypes } from "./node-record.ts";
import { pathAttemptSchema, pathReasonCodes } from "./path-why.ts";

const at = z.string(); // ISO time of the event at its source

/** One upstream as relay choice scored it (bus/status.ts RelayUpstreamScore). */
const relayUpstreamScoreSchema = z.object({
  url: z.string(),
  server: z.string().optional(),
  rttMs: z.number().optional(),
  loss: z.number(),
  probes: z.number(),
  load: z.object({ channels: z.number(), bytesPerSecond: z.number() }).optional(),
  /** null: unreachable (no probe answered). */
  score: z.number().nullable(),
});

export const meshEvents = {
  /** Every actor, every few seconds: it is alive, and in which state. */
  heartbeat: z.object({ at, state: z.string(), uptimeMs: z.number(), detail: z.record(z.string(), z.unknown()).optional() }),
  /** Every actor, on each transition of its machine. */
  state: z.object({ at, from: z.string().nullable(), to: z.string(), reason: z.string().optional() }),
  /**
   * controller: one catalog object changed in this node's view. A put carries the object, but a TLS Secret's only as
   * `redacted: true` (its key must not travel under mesh.>): a reader asks the controller for it (rpc `catalog.object`).
   */
  catalog: z.object({
    at,
    op: z.enum(["put", "delete"]),
    key: z.string(),
    revision: z.number(),
    object: catalogObjectSchema.optional(),
    redacted: z.boolean().optional(),
  }),
  /** controller: the view is complete (initial load done) and whether it is fresh. */
  sync: z.object({ at, objects: z.number(), revision: z.number(), online: z.boolean() }),
  /** fabric: the leaf link to the hubs (or a hub's routes) went up or down. */
  link: z.object({
    at,
    up: z.boolean(),
    kind: z.enum(["leaf", "route", "gateway"]),
    remote: z.string().optional(),
    url: z.string().optional(),
    rttMs: z.number().optional(),
  }),
  /** fabric: the embedded nats-server started, exited or is restarting. */
  server: z.object({ at, status: z.enum(["starting", "ready", "exited", "restarting", "stopped"]), detail: z.string().optional() }),
  /**
   * fabric, on a hub, every few seconds: its relay load, what agents weigh in choosing their upstream
   * (docs/relay-choice.md): relay channels open through it and bytes/s through its leaf connections.
   */
  load: z.object({ at, channels: z.number().int().min(0), bytesPerSecond: z.number().min(0), leafs: z.number().int().min(0) }),
  /**
   * fabric, on an agent: relay choice moved the leaf link (which carries every relayed stream) to
   * another upstream, and why: the scores of every upstream when it decided (roles/relay-choice.ts).
   * Sent twice: when it decides (through the degraded link, so it may be lost) and after the first
   * probe round through the new one (with `movedInMs` and the scores `after`).
   */
  upstream: z.object({
    at,
    from: z.string().nullable(),
    to: z.string(),
    reason: z.string(),
    scores: z.array(relayUpstreamScoreSchema),
    /** How long the leaf server's restart took: present on the second event, sent after the move. */
    movedInMs: z.number().optional(),
    /** The scores of the first probe round after the move (second event). */
    after: z.array(relayUpstreamScoreSchema).optional(),
  }),
  /** publisher: lease taken or lost; catalog writes done. */
  lease: z.object({ at, holder: z.string().nullable(), held: z.boolean() }),
  publish: z.object({ at, puts: z.number(), deletes: z.number(), objects: z.number(), source: z.string() }),
  /** publisher: a manifest or object was rejected. */
  rejected: z.object({ at, source: z.string(), file: z.string().optional(), object: z.string().optional(), error: z.string() }),
  /** dns: counters since start and latency. */
  stats: z.record(z.string(), z.unknown()),
  /** tunnel: the path to a peer changed. */
  path: z.object({
    at,
    peer: z.string(),
    kind: z.enum(["discovering", "direct", "hole-punched", "relayed", "unreachable"]),
    rttMs: z.number().optional(),
    detail: z.string().optional(),
  }),
  /**
   * tunnel: why the path to a peer is what it became (sent after each `path` change but
   * discovering): the reason as a code and a sentence, what would change it, both NAT types
   * and the attempt that decided it. The whole story: `rpc.<node>.tunnel.why` (bus/path-why.ts).
   */
  why: z.object({
    at,
    peer: z.string(),
    kind: z.enum(["none", "discovering", "direct", "hole-punched", "relayed", "unreachable"]),
    code: z.enum(pathReasonCodes),
    reason: z.string(),
    wouldChange: z.array(z.string()),
    nat: z.object({ local: z.enum(natTypes), peer: z.enum(natTypes) }),
    lastAttempt: pathAttemptSchema.optional(),
  }),
  /**
   * tunnel: a relayed stream opened or closed. The hubs keep the ids of open channels per node
   * (roles/hub-load.ts, at most 10,000 each): bounded here too, as a node's events are its own word
   * (a stolen node's 10,000 ids of 100 KB each would have been a gigabyte in a hub's process).
   * Channel ids are 12 characters (services/tunnel/relay.ts).
   */
  relay: z.object({
    at: at.max(64),
    peer: z.string().max(63),
    stream: z.string().max(64),
    status: z.enum(["open", "closed", "reset"]),
    bytes: z.number().optional(),
    reason: z.string().optional(),
  }),
  /**
   * traffic: the listener of every proxied service port, as a full set split in
   * pages (10,000 services exceed one NATS message); a consumer applies a
   * generation once it holds all its pages.
   */
  listeners: z.object({
    at,
    generation: z.number(),
    page: z.number(),
    pages: z.number(),
    listeners: z.array(
      z.object({
        /** "namespace/name:portName/PROTOCOL" */
        key: z.string(),
        protocol: z.enum(["TCP", "UDP"]),
        clusterIPs: z.array(z.string()),
        port: z.number(),
        /** Where the listener takes it: the agent's listenHost, or a TCP service port's own loopback address on the shared listener. Absent from agents before it. */
        listenerHost: z.string().optional(),
        listenerPort: z.number(),
        /**
         * Where it takes the service port's IPv6 cluster IP (bus/ipv6-listeners.ts: an address of the shared TCP
         * listener, or ipv6ListenerAddress). Absent when it has no IPv6 socket (IPv6 off on the host, no interception).
         */
        listenerHost6: z.string().optional(),
        listenerPort6: z.number().optional(),
        /**
         * A UDP service port with no endpoints: the proxier rejects its datagrams with ICMP port unreachable, as
         * kube-proxy does, so that a client fails at once instead of waiting out its timeout. Absent: DNAT as usual.
         */
        refused: z.boolean().optional(),
      }),
    ),
  }),
  /**
   * gateway: what this node's ingress gateway serves changed (a route, a refusal or a listener): the whole table,
   * small (one entry per route and port). Refused routes and listeners carry their reason.
   */
  routes: z.object({
    at,
    gateways: z.array(z.string()),
    routes: z.array(z.object({ route: z.string(), port: z.number(), kind: z.enum(["http", "tls-passthrough", "tls-terminate", "tcp"]), hosts: z.array(z.string()) })),
    refused: z.array(z.object({ object: z.string(), reason: z.string(), error: z.string() })),
    listeners: z.array(z.object({ port: z.number(), kind: z.enum(["http", "tls", "tcp"]), state: z.enum(["opening", "listening", "failed"]), error: z.string().optional() })),
  }),
  /** proxier: rules synced. */
  rules: z.object({ at, backend: z.string(), services: z.number(), durationMs: z.number(), error: z.string().optional() }),
} as const;

export type MeshEventName = keyof typeof meshEvents;
/** One proxied service port and the local port its traffic listener takes it on. */
export type ListenerBinding = z.infer<typeof meshEvents.listeners>["listeners"][number];
export type MeshEventPayload<E extends MeshEventName> = z.infer<(typeof meshEvents)[E]>;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeEvent<E extends MeshEventName>(event: E, payload: MeshEventPayload<E>): Uint8Array {
  return encoder.encode(JSON.stringify(meshEvents[event].parse(payload)));
}

/**
 * A catalog event (`meshEvents.catalog`), its object spliced in as the JSON text of the KV value it was decoded
 * from. A fresh agent publishes one event per object of its mirror (20,000 at 10,000 services); encoding each
 * decoded object again with JSON.stringify cost more of its CPU than parsing it had (bench/fabric, issue 17).
 * The text passed decodeCatalogObject, and a reader decodes the event's object with the same schema, so it gets
 * what this node holds; fields the schema does not know are dropped there, as here. A put without its text is
 * encoded from the object. A TLS Secret goes out without its key (redactForEvent): mesh.> is for watching.
 *
 * Text, not the value's bytes: the controller holds each change until its batch goes out, and a KV value is a
 * view of the socket chunk it came in (up to 64 KiB of malloc's memory, freed only once V8 collects the chunk:
 * a chunk held past a young collection waits for a full one). A string is V8's own young memory.
 */
export function encodeCatalogEvent(at: string, change: { key: string; revision: number; object?: CatalogObject; json?: string }): string {
  const { key, revision, object, json } = change;
  const head = `{"at":${JSON.stringify(at)},"op":"${object ? "put" : "delete"}","key":${JSON.stringify(key)},"revision":${revision}`;
  if (!object) return `${head}}`;
  if (!redactForEvent(object).object) return `${head},"redacted":true}`;
  return `${head},"object":${json ?? JSON.stringify(object)}}`;
}

export function decodeEvent<E extends MeshEventName>(event: E, bytes: Uint8Array): MeshEventPayload<E> {
  return meshEvents[event].parse(JSON.parse(decoder.decode(bytes))) as MeshEventPayload<E>;
}

export function isMeshEventName(name: string): name is MeshEventName {
  return Object.hasOwn(meshEvents, name);
}

export function nowIso(now: () => number = Date.now): string {
  return new Date(now()).toISOString();
}
