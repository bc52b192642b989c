/**
 * How far this agent reaches, for the per-service partition policy (bus/partition.ts): "none" while
 * its leaf link is down (the controller's online state); "cloud" while it is up and, when the agent
 * attaches to an edge site (`--upstream-domain <site>`), that site still reaches the cloud; "site"
 * while the agent reaches its site and the site is cut off from the cloud. An agent under a site
 * keeps its link to the site through a cut of the site's uplink; only the site's catalog mirror knows
 * that the cloud is gone: its source reports `active: -1` during a cut (docs/nats-facts.md: lag stays
 * 0, `active` is the signal). So the agent asks its site for that mirror's state every few seconds.
 *
 * ```ts
 * const upstream = watchUpstream({ controller, connection, upstreamDomain: "shop-7", log });
 * upstream.state.reach; // "site" while the site is cut from the cloud, "none" while the node is cut from its site
 * ```
 */
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { buckets, hubDomain } from "../bus/subjects.ts";
import { UpstreamSwitch, type UpstreamState } from "../bus/partition.ts";
import type { Controller } from "../services/controller/agent-controller.ts";
import type { Logger } from "../lib/log.ts";
import { describeError } from "../lib/errors.ts";

/** @default 2_000 — a site's cut shows in the policy within about this long after the site notices it. */
export const siteCheckIntervalMs = 2_000;
/** @default 30 s — a site mirror silent for longer than this counts as cut off from the cloud (its idle heartbeats come every few seconds). */
export const siteSilenceMs = 30_000;

export function watchUpstream(options: { controller: Controller; connection: NatsConnection; upstreamDomain: string; log: Logger; intervalMs?: number }): { state: UpstreamState; stop(): void } {
  const { controller, log } = options;
  let siteReachesCloud = true;
  const reach = () => (!controller.online ? "none" : siteReachesCloud ? "cloud" : "site");
  const state = new UpstreamSwitch(reach());
  const update = () => state.set(reach());
  const subscription = controller.actor.subscribe(update);
  let timer: NodeJS.Timeout | undefined;
  if (options.upstreamDomain !== hubDomain) {
    let said: boolean | undefined;
    const check = async () => {
      if (!controller.online) return;
      let reaches: boolean;
      try {
        const manager = await jetstreamManager(options.connection, { domain: options.upstreamDomain, timeout: 2_000, checkAPI: false });
        const active = (await manager.streams.info(`KV_${buckets.catalog}`)).mirror?.active;
        reaches = active !== undefined && active >= 0 && active / 1e6 < siteSilenceMs;
      } catch (error) {
        log.debug({ err: describeError(error) }, "the site's catalog mirror state is not known now");
        return;
      }
      siteReachesCloud = reaches;
      if (said !== reaches) {
        said = reaches;
        log.info({ site: options.upstreamDomain, reachesCloud: reaches }, reaches ? "the site reaches the cloud" : "the site is cut off from the cloud: fail-closed services with a backend outside the site are refused");
      }
      update();
    };
    timer = setInterval(() => void check(), options.intervalMs ?? siteCheckIntervalMs);
    timer.unref();
    void check();
  }
  return {
    state,
    stop() {
      subscription.unsubscribe();
      if (timer) clearInterval(timer);
    },
  };
}
