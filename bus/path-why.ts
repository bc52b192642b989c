/**
 * Why a node reaches a peer the way it does, as `rpc.<node>.tunnel.why` answers it
 * (`leafmesh status --why PEER`) and `mesh.<node>.tunnel.why` announces it on each
 * path change; and what `rpc.<node>.netcheck` answers (`leafmesh netcheck`). A
 * contract between processes, so the shapes live here with the other message
 * types; services/tunnel/path-reasons.ts fills them in.
 *
 * ```ts
 * const why = await rpcRequest(connection, "edge-a", rpc.tunnelWhy, { node: "edge-b" });
 * why.reason.code; // "nat-pair-unpunchable"
 * ```
 */
import * as z from "../lib/schema/index.ts";
import { natEvidenceSchema, natTypes } from "./node-record.ts";

export { natEvidenceSchema, type NatEvidence } from "./node-record.ts";

const hostPort = z.object({ host: z.string(), port: z.number() });


/** One node's NAT as known here: our own as measured, a peer's from its signed record. */
export const natViewSchema = z.object({
  node: z.string(),
  type: z.enum(natTypes),
  mapped: hostPort.optional(),
  evidence: natEvidenceSchema.optional(),
  /** "measured": this process ran the detection; "record": the peer's node record says so. */
  source: z.enum(["measured", "record", "none"]),
  at: z.string().optional(),
});
export type NatView = z.infer<typeof natViewSchema>;

export const pathWays = ["existing", "direct", "punch", "relay", "inbound"] as const;
export type PathWay = (typeof pathWays)[number];

/**
 * One try of one way to the peer: when, how (the plan: which addresses, which punch plan,
 * which hub relays), how long it took and what came of it, in the words of what failed
 * ("ECONNREFUSED from 198.18.65.10:4101", "4 SYNs sent, 3 refused by a router").
 */
export const pathAttemptSchema = z.object({
  at: z.string(),
  way: z.enum(pathWays),
  plan: z.string().optional(),
  outcome: z.enum(["connected", "failed", "skipped"]),
  ms: z.number(),
  detail: z.string(),
  /** How many times in a row this same try ended the same way (the latest time is `at`). */
  repeats: z.number().optional(),
});
export type PathAttempt = z.infer<typeof pathAttemptSchema>;

/**
 * Why the path is the one it is, as a code a script can branch on and a sentence:
 * - lan-direct / direct: a direct dial answered (a LAN neighbour, or a listen address that is reachable);
 * - punched: the NAT pair allows a punch and it connected;
 * - nat-pair-unpunchable: DESIGN.md's table says no punch exists between these two NATs;
 * - nat-unknown: a NAT is not measured (no observer), so no punch is tried;
 * - punch-failed: the pair allows a punch, and it failed (the attempts say how);
 * - punch-off / direct-off: this node's ways exclude them (--tunnel-ways);
 * - unreachable: every way failed; discovering: the first attempt is under way; none: no path yet.
 */
export const pathReasonCodes = ["lan-direct", "direct", "punched", "nat-pair-unpunchable", "nat-unknown", "punch-failed", "punch-off", "unreachable", "discovering", "none"] as const;
export type PathReasonCode = (typeof pathReasonCodes)[number];

export const pathWhySchema = z.object({
  node: z.string(),
  peer: z.string(),
  at: z.string(),
  path: z.enum(["none", "discovering", "direct", "hole-punched", "relayed", "unreachable"]),
  rttMs: z.number().optional(),
  /** The connections open to the peer, best first (a relayed one stays while a better one's streams move over). */
  connections: z.array(z.string()),
  nat: z.object({ local: natViewSchema, peer: natViewSchema }),
  /** nat.ts's plan for the pair: simultaneous, a-listens (this node listens), b-listens (the peer listens), relay (no punch exists). */
  punchPlan: z.enum(["simultaneous", "a-listens", "b-listens", "relay"]),
  reason: z.object({ code: z.enum(pathReasonCodes), text: z.string() }),
  /** What would make the path better (or worse), said as conditions. */
  wouldChange: z.array(z.string()),
  /** The latest attempts, oldest first (bounded). */
  attempts: z.array(pathAttemptSchema),
});
export type PathWhy = z.infer<typeof pathWhySchema>;

/** `rpc.<node>.netcheck`: this node's network as it measures it now. */
export interface Netcheck {
  node: string;
  at: string;
  /** A fresh NAT detection (with its evidence), or why none could run. */
  nat: NatView & { error?: string };
  observer?: { host: string; ports: [number, number] };
  /** TCP connect time to each upstream the leaf may attach to (hubs, site servers); undefined: did not answer. */
  upstreams: { url: string; rttMs?: number }[];
  /** Peers seen by mDNS on this node's LAN, with their node name once identify told it, and whether a direct connection is open. */
  lan: { peerId: string; node?: string; addresses: string[]; lastSeen: string; connected: boolean }[];
  mdns: boolean;
}
