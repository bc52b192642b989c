/**
 * The path to one remote node, as an xstate machine (docs/nat.md, "The NAT types and which pairs punch"):
 *
 *   discovering → direct | holePunched | relayed → (while relayed: retry upgrades)
 *              ↘ unreachable → (backoff, doubling) → discovering
 *   direct / holePunched / relayed → LOST → discovering (fall back)
 *
 * Pure: the attempts themselves are actions the tunnel actor provides
 * (`attempt`, `attemptUpgrade`, `announce`); results come back as events. Time
 * comes from the actor's clock, so a test steps backoffs with a ManualClock.
 *
 * ```ts
 * const actor = createActor(pathMachine.provide({ actions: { attempt, attemptUpgrade, announce } }), { input: { peer: "edge-b" }, clock }).start();
 * actor.send({ type: "CONNECTED", kind: "relayed", rttMs: 4.2 });
 * ```
 */
import { assign, setup } from "xstate";

export type PathKind = "direct" | "hole-punched" | "relayed";
export type PathStateKind = "discovering" | PathKind | "unreachable";

export interface PathInput {
  peer: string;
  /** @default 1_000 — first wait after every way failed. */
  backoffMinMs?: number;
  /** @default 60_000 — a node that stays away is retried once a minute. */
  backoffMaxMs?: number;
  /** @default 15_000 — how often a relayed path tries to become direct or hole-punched. */
  upgradeIntervalMs?: number;
}

export interface PathContext {
  peer: string;
  backoffMinMs: number;
  backoffMaxMs: number;
  backoffMs: number;
  upgradeIntervalMs: number;
  rttMs?: number;
  /** Why the last attempt failed or the path was lost. */
  reason?: string;
}

export type PathEvent =
  | { type: "CONNECTED"; kind: PathKind; rttMs?: number; reason?: string }
  | { type: "FAILED"; reason: string }
  | { type: "UPGRADE_FAILED"; reason: string }
  | { type: "LOST"; kind: PathKind; reason: string }
  | { type: "RTT"; rttMs: number }
  | { type: "RETRY" };

const rank: Record<PathKind, number> = { direct: 3, "hole-punched": 2, relayed: 1 };

export const pathMachine = setup({
  types: { context: {} as PathContext, events: {} as PathEvent, input: {} as PathInput },
  actions: {
    /** Try every way in order (direct, hole punch, relay); answer CONNECTED or FAILED. */
    attempt: () => undefined,
    /** Try direct and hole punch only; answer CONNECTED or UPGRADE_FAILED. */
    attemptUpgrade: () => undefined,
    /** Publish the path event for the state just entered. */
    announce: (_, _params: { kind: PathStateKind }) => undefined,
    /** Drop connections of a kind the path no longer uses (the relay after an upgrade). */
    released: (_, _params: { kind: PathKind }) => undefined,
    recordConnected: assign(({ event }) => (event.type === "CONNECTED" ? { rttMs: event.rttMs, reason: event.reason } : {})),
    resetBackoff: assign(({ context }) => ({ backoffMs: context.backoffMinMs })),
    recordReason: assign(({ event }) => ("reason" in event ? { reason: event.reason } : {})),
    doubleBackoff: assign(({ context }) => ({ backoffMs: Math.min(context.backoffMaxMs, context.backoffMs * 2) })),
    recordRtt: assign(({ event }) => (event.type === "RTT" ? { rttMs: event.rttMs } : {})),
  },
  guards: {
    isDirect: ({ event }) => event.type === "CONNECTED" && event.kind === "direct",
    isPunched: ({ event }) => event.type === "CONNECTED" && event.kind === "hole-punched",
    isRelayed: ({ event }) => event.type === "CONNECTED" && event.kind === "relayed",
    lostCurrent: ({ event }, params: { kind: PathKind }) => event.type === "LOST" && event.kind === params.kind,
    betterThan: ({ event }, params: { kind: PathKind }) => event.type === "CONNECTED" && rank[event.kind] > rank[params.kind],
  },
  delays: {
    backoff: ({ context }) => context.backoffMs,
    upgradeInterval: ({ context }) => context.upgradeIntervalMs,
  },
}).createMachine({
  id: "path",
  initial: "discovering",
  context: ({ input }) => ({
    peer: input.peer,
    backoffMinMs: input.backoffMinMs ?? 1_000,
    backoffMaxMs: input.backoffMaxMs ?? 60_000,
    backoffMs: input.backoffMinMs ?? 1_000,
    upgradeIntervalMs: input.upgradeIntervalMs ?? 15_000,
  }),
  on: {
    RTT: { actions: "recordRtt" },
  },
  states: {
    discovering: {
      entry: [{ type: "announce", params: { kind: "discovering" } }, "attempt"],
      on: {
        CONNECTED: [
          { guard: "isDirect", target: "direct", actions: "recordConnected" },
          { guard: "isPunched", target: "holePunched", actions: "recordConnected" },
          { guard: "isRelayed", target: "relayed", actions: "recordConnected" },
        ],
        FAILED: { target: "unreachable", actions: "recordReason" },
      },
    },
    direct: {
      entry: ["resetBackoff", { type: "announce", params: { kind: "direct" } }, { type: "released", params: { kind: "relayed" } }],
      on: {
        LOST: { guard: { type: "lostCurrent", params: { kind: "direct" } }, target: "discovering", actions: "recordReason" },
      },
    },
    holePunched: {
      entry: ["resetBackoff", { type: "announce", params: { kind: "hole-punched" } }, { type: "released", params: { kind: "relayed" } }],
      on: {
        LOST: { guard: { type: "lostCurrent", params: { kind: "hole-punched" } }, target: "discovering", actions: "recordReason" },
        CONNECTED: { guard: { type: "betterThan", params: { kind: "hole-punched" } }, target: "direct", actions: "recordConnected" },
      },
    },
    relayed: {
      entry: ["resetBackoff", { type: "announce", params: { kind: "relayed" } }],
      initial: "waiting",
      on: {
        LOST: { guard: { type: "lostCurrent", params: { kind: "relayed" } }, target: "discovering", actions: "recordReason" },
        CONNECTED: [
          { guard: "isDirect", target: "direct", actions: "recordConnected" },
          { guard: "isPunched", target: "holePunched", actions: "recordConnected" },
        ],
      },
      states: {
        waiting: { after: { upgradeInterval: "upgrading" } },
        upgrading: {
          entry: "attemptUpgrade",
          on: { UPGRADE_FAILED: { target: "waiting", actions: "recordReason" } },
        },
      },
    },
    unreachable: {
      entry: { type: "announce", params: { kind: "unreachable" } },
      after: { backoff: { target: "discovering", actions: "doubleBackoff" } },
      on: {
        RETRY: "discovering",
        // The peer reached us meanwhile (it dialled, or came back on the LAN).
        CONNECTED: [
          { guard: "isDirect", target: "direct", actions: "recordConnected" },
          { guard: "isPunched", target: "holePunched", actions: "recordConnected" },
          { guard: "isRelayed", target: "relayed", actions: "recordConnected" },
        ],
      },
    },
  },
});

/** The path kind a machine state stands for. */
export function pathKindOf(value: unknown): PathStateKind {
  const top = typeof value === "string" ? value : Object.keys(value as object)[0];
  return top === "holePunched" ? "hole-punched" : (top as PathStateKind);
}
