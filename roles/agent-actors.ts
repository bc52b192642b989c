/**
 * The agent's actors, built from its options: the one place that imports the
 * actor packages (`services/*`) and hands each its components (bus, catalog
 * feed, logger, registry). Actors still talk to each other only through the
 * bus; the tunnel's stream opener is the one thing handed across in-process,
 * to traffic (DESIGN.md).
 */
import type { ActorFactory, StartedActor } from "./agent.ts";
import { createTrafficActor } from "../services/traffic/index.ts";
import { busListenerSource, createProxierActor, type InterceptMode } from "../services/proxier/index.ts";

export interface AgentActorOptions {
  /** Where traffic listens (the proxier DNATs cluster IPs there). */
  proxyHost: string;
  intercept: InterceptMode;
}

export function agentActors(options: AgentActorOptions): ActorFactory[] {
  const traffic: ActorFactory = async ({ bus, feed, log, node }): Promise<StartedActor> => {
    const actor = createTrafficActor({ bus, feed, log: log.child({ actor: "traffic" }), node, listenHost: options.proxyHost });
    await actor.start();
    return { name: "traffic", actor: actor.actor, detail: () => ({ ...actor.stats(), listeners: actor.listeners(), rejected: actor.rejected() }), stop: () => actor.stop() };
  };
  const proxier: ActorFactory = async ({ bus, feed, log }): Promise<StartedActor> => {
    const listeners = busListenerSource(bus);
    const actor = createProxierActor({ bus, feed, log: log.child({ actor: "proxier" }), intercept: options.intercept, listeners, listenHost: options.proxyHost });
    await actor.start();
    return {
      name: "proxier",
      actor: actor.actor,
      detail: () => ({ ...actor.stats() }),
      stop: async () => {
        await actor.stop();
        listeners.close();
      },
    };
  };
  return [proxier, traffic];
}
