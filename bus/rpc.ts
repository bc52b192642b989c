/**
 * Every request/reply method of the mesh, in one typed table: its name (the
 * subject is `rpc.<node>.<name>`), its request and reply types, how a request
 * from outside is checked, and who may call it. Servers (`Bus.serve`), callers
 * (`rpcRequest`) and the NATS permissions of every node and of the mesh
 * account (trust/claims.ts) are all derived from this table, so renaming a
 * method or changing who may call it is one edit, and a test holds the
 * permissions to it (trust/claims.test.ts).
 *
 * ```ts
 * bus.serve(rpc.status, () => status());                       // rpc.<node>.status
 * const status = await rpcRequest(connection, "edge-a", rpc.status);
 * ```
 */
import * as z from "../lib/schema/index.ts";
import type { NatType } from "./node-record.ts";
import type { CatalogObject } from "./catalog.ts";
import type { NodeStatus } from "./status.ts";
import type { Netcheck, PathWhy } from "./path-why.ts";

/**
 * Who may call a method:
 * - "local": the node's own processes and operators on the node (its own nats-server: the agent's
 *   actors, `leafmesh status --node`);
 * - "hub": the hubs' side of the fabric (the mesh account: hub processes, operators' tools at a hub);
 * - "peers": other nodes, through their accounts (each node account imports the method of each peer).
 */
export type RpcCaller = "local" | "hub" | "peers";

export interface RpcMethod<Request, Reply> {
  readonly name: string;
  readonly callers: readonly RpcCaller[];
  /** Checks a request that came in over the fabric; throws with what is wrong (the caller gets `{ error }`). */
  readonly parseRequest: (request: unknown) => Request;
  /** Types only: what the reply is. */
  readonly reply?: Reply;
}

function method<Request, Reply>(name: string, callers: readonly RpcCaller[], parseRequest: (request: unknown) => Request): RpcMethod<Request, Reply> {
  return { name, callers, parseRequest };
}

const noRequest = (request: unknown): undefined => {
  if (request !== undefined && request !== null && !(typeof request === "object" && Object.keys(request).length === 0)) throw new Error("this method takes no request");
  return undefined;
};

/** One page of the catalog: the entries after `after` in key order, at most `limit`. */
export const snapshotRequestSchema = z.object({ after: z.string().max(1_024).optional(), limit: z.number().int().positive().max(100_000).optional() }).strict();
export type SnapshotRequest = z.infer<typeof snapshotRequestSchema>;

export const catalogObjectRequestSchema = z.object({ key: z.string().min(1).max(1_024) }).strict();

export interface SnapshotPage {
  objects: { key: string; revision: number; object: CatalogObject }[];
  /** Pass as `after` to get the next page; null on the last one. */
  next: string | null;
}

const hostPortSchema = z.object({ host: z.string().min(1).max(255), port: z.number().int().min(0).max(65_535) });
const natTypeSchema = z.enum(["none", "full-cone", "restricted-cone", "port-restricted", "symmetric", "unknown"]) satisfies z.Schema<NatType>;

/** What a punched socket becomes: the pair's libp2p connection, or one tunnel stream under TLS. */
export const punchPurposes = ["libp2p", "tls-stream"] as const;
export type PunchPurpose = (typeof punchPurposes)[number];

/** A node asking a peer to punch a TCP connection with it (services/tunnel). Peer input: checked field by field. */
export const punchRequestSchema = z.object({
  from: z.string().min(1).max(63),
  peerId: z.string().min(1).max(200),
  nat: natTypeSchema,
  mapped: hostPortSchema,
  /** @default "libp2p" (agents before TLS streams did not send it) */
  purpose: z.enum(punchPurposes).optional(),
  /** Security on (services/tunnel/punch-proof.ts): the node asked, the time of asking (ms), and the asker's certificate and signature over the request. */
  to: z.string().min(1).max(63).optional(),
  at: z.number().int().optional(),
  proof: z.object({ cert: z.string().min(1).max(16_384), signature: z.string().min(1).max(1_024) }).optional(),
});
export type PunchRequest = z.infer<typeof punchRequestSchema>;
/** The answering side's mapped address for the punch; a decline says why. */
export interface PunchReply {
  mapped?: { host: string; port: number };
  error?: string;
}

/** `status --why PEER`: the peer's node name. */
export const tunnelWhyRequestSchema = z.object({ node: z.string().min(1).max(63) }).strict();
export type TunnelWhyRequest = z.infer<typeof tunnelWhyRequestSchema>;

export const rpc = {
  /** The node's role, links and actors (`leafmesh status`; the hubs ask too). */
  status: method<undefined, NodeStatus>("status", ["local", "hub"], noRequest),
  /** A page of the catalog as this process holds it (actors starting late; `leafmesh status`). */
  catalogSnapshot: method<SnapshotRequest, SnapshotPage>("catalog.snapshot", ["local", "hub"], (request) => snapshotRequestSchema.parse(request ?? {})),
  /**
   * One catalog object with its revision, or null: how an actor of the node gets an object a catalog event left out
   * (a TLS Secret's key). The node's own processes only: the hubs hold the catalog already, peers have no business with it.
   */
  catalogObject: method<{ key: string }, { revision: number; object: CatalogObject } | null>("catalog.object", ["local"], (request) => catalogObjectRequestSchema.parse(request)),
  /** Traffic publishes its full listener set again (a proxier that (re)started asks); replies with the generation. */
  trafficListeners: method<undefined, { generation: number; listeners: number }>("traffic.listeners", ["local"], noRequest),
  /**
   * A peer asks to punch a TCP connection (services/tunnel): the only method one node may call on
   * another. The hubs' side (trusted operators) reaches every method a node serves outside itself.
   */
  tunnelPunch: method<PunchRequest, PunchReply>("tunnel-punch", ["peers", "hub"], (request) => punchRequestSchema.parse(request)),
  /** Why the path to one peer is what it is: NATs with evidence, attempts, reason, what would change it (`leafmesh status --why`). */
  tunnelWhy: method<TunnelWhyRequest, PathWhy>("tunnel.why", ["local", "hub"], (request) => tunnelWhyRequestSchema.parse(request)),
  /** This node's network measured now: NAT (detected again), RTT to each upstream, LAN peers by mDNS (`leafmesh netcheck`). */
  netcheck: method<undefined, Netcheck>("netcheck", ["local", "hub"], noRequest),
} as const;

export const rpcMethods: readonly RpcMethod<unknown, unknown>[] = Object.values(rpc);

/** Methods the given caller may call. */
export function methodsCallableBy(caller: RpcCaller): string[] {
  return rpcMethods.filter((entry) => entry.callers.includes(caller)).map((entry) => entry.name);
}
