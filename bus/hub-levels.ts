/**
 * The hubs' mesh protocol levels, as their relay-load records say (`fabric-load.<hub>`, roles/hub-load.ts;
 * bus/protocol.ts `hubRecordLevel`): hubs write no node record, and this record is the one every node account
 * imports and every hub publishes every 5 s. Each hub is said once per level it shows that is not this node's
 * (an older hub as a warning: hubs are upgraded first; a newer one as information: the order kept), and a hub not
 * heard for `hubHeardWithinMs` no longer counts.
 *
 * ```ts
 * const hubs = new HubLevels({ log, self: "hub-1" });
 * hubs.watch(connection);   // fabric-load.* until stop()
 * hubs.heard();             // [{ node: "hub-2", protocol: 0 }]: what a keep-alive adapts to
 * hubs.skews();             // for status: the hubs on another level, and which side to upgrade
 * hubs.stop();
 * ```
 */
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { systemClock, type Clock } from "../lib/clock.ts";
import type { Logger } from "../lib/log.ts";
import { hubRecordLevel, protocolSkew, type ProtocolSkew } from "./protocol.ts";
import { hubLoadRoot } from "./subjects.ts";

/**
 * @default 30_000 — a hub not heard for this long no longer counts: it publishes every 5 s, so six records missed
 * (stopped, renamed, or its monitor not answering); one heard again counts again.
 */
export const hubHeardWithinMs = 30_000;

/** @default 1_000 — hubs kept at most: names come from subjects that anything in the mesh account may publish. */
const maxHubs = 1_000;

export class HubLevels {
  readonly #log: Logger;
  readonly #clock: Pick<Clock, "monotonic">;
  readonly #self: string | undefined;
  /** Each hub's level and when it was last heard (monotonic ms). */
  readonly #hubs = new Map<string, { level: number; heardAt: number }>();
  /** The level last said per hub: said again only when it changes (an upgrade). */
  readonly #said = new Map<string, number>();
  #subscription: Subscription | undefined;

  constructor(options: { log: Logger; clock?: Pick<Clock, "monotonic">; self?: string }) {
    this.#log = options.log;
    this.#clock = options.clock ?? systemClock;
    this.#self = options.self;
  }

  /** Listens to every hub's relay-load record on `connection` until `stop`. */
  watch(connection: NatsConnection): void {
    this.#subscription = connection.subscribe(`${hubLoadRoot}.*`, {
      callback: (error, message) => {
        if (error) return;
        const level = hubRecordLevel(message.data);
        if (level !== undefined) this.saw(message.subject.slice(hubLoadRoot.length + 1), level);
      },
    });
  }

  /** A hub's record arrived with `level`. */
  saw(hub: string, level: number): void {
    if (hub === this.#self) return;
    if (!this.#hubs.has(hub) && this.#hubs.size >= maxHubs) this.#prune();
    if (!this.#hubs.has(hub) && this.#hubs.size >= maxHubs) return;
    this.#hubs.set(hub, { level, heardAt: this.#clock.monotonic() });
    const said = this.#said.get(hub);
    if (said === level) return;
    if (said === undefined && this.#said.size >= maxHubs) this.#said.clear();
    this.#said.set(hub, level);
    const skew = protocolSkew({ peer: hub, level, role: "hub" });
    const fields = { hub, protocol: level, ...(skew ? { upgrade: skew.upgrade } : {}) };
    if (skew?.upgrade === "peer") this.#log.warn(fields, skew.message);
    else if (skew) this.#log.info(fields, skew.message);
    else if (said !== undefined) this.#log.info(fields, `hub '${hub}' now runs this node's leafmesh protocol (${level})`);
  }

  /** The hubs heard within `hubHeardWithinMs`, each as a record of its level. */
  heard(): { node: string; protocol: number }[] {
    this.#prune();
    return [...this.#hubs].map(([node, { level }]) => ({ node, protocol: level }));
  }

  /** The hubs heard that run another protocol level than this node, by name. */
  skews(): ProtocolSkew[] {
    return this.heard()
      .map((hub) => protocolSkew({ peer: hub.node, level: hub.protocol, role: "hub" }))
      .filter((skew): skew is ProtocolSkew => skew !== undefined)
      .sort((a, b) => a.peer.localeCompare(b.peer));
  }

  stop(): void {
    this.#subscription?.unsubscribe();
  }

  #prune(): void {
    const now = this.#clock.monotonic();
    for (const [hub, { heardAt }] of this.#hubs) if (now - heardAt > hubHeardWithinMs) this.#hubs.delete(hub);
  }
}
