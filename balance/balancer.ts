/**
 * One service port's endpoint choice: its policy (wrapped in session affinity when
 * the Service asks), topology tiers (own node first), outlier ejection and the
 * endpoints excluded after a failed connect in this attempt. Loads and outliers are
 * shared by every service port of the agent (an endpoint may back several).
 *
 * ```ts
 * const balancer = new ServicePortBalancer({ endpoints, policy: choosePolicy(service, rule) }, shared);
 * const target = balancer.choose("198.18.1.7", new Set()); // undefined: no endpoint at all
 * ```
 */
import type { Clock } from "../lib/clock.ts";
import type { PolicyChoice } from "./endpoints.ts";
import type { OutlierDetector } from "./outlier.ts";
import { createPicker, topologyTiers, withSessionAffinity, type EndpointTarget, type NodeTopology, type Picker } from "./policy.ts";

const noKeys: string[] = [];

export interface BalancerShared {
  node: string;
  clock: Clock;
  outliers: OutlierDetector;
  /** Active connections/flows per endpoint key, across service ports. */
  active: Map<string, number>;
  random?: () => number;
  /** Sites and paths of other nodes (the tunnel's view); without it only this node's endpoints come first. */
  topology?: NodeTopology;
  /** Why a new connection or flow to this service port is refused now (partition.ts), or undefined: admitted. */
  admit?: (plan: { key: string; namespace: string; service: string }) => string | undefined;
}

/** What a balancer balances: a Service port's endpoints and policy (the traffic actor's ServicePortPlan is one). */
export interface BalancedPort {
  endpoints: EndpointTarget[];
  policy: PolicyChoice;
}

export class ServicePortBalancer<Plan extends BalancedPort = BalancedPort> {
  readonly #shared: BalancerShared;
  #plan: Plan;
  #picker: Picker;
  #tiers: EndpointTarget[][];

  constructor(plan: Plan, shared: BalancerShared) {
    this.#shared = shared;
    this.#plan = plan;
    this.#picker = this.#makePicker(plan);
    this.#tiers = topologyTiers(plan.endpoints, shared.node);
  }

  get plan(): Plan {
    return this.#plan;
  }

  get hasEndpoints(): boolean {
    return this.#plan.endpoints.length > 0;
  }

  update(plan: Plan): void {
    const policyChanged = JSON.stringify(plan.policy) !== JSON.stringify(this.#plan.policy);
    this.#plan = plan;
    if (policyChanged) this.#picker = this.#makePicker(plan);
    this.#tiers = topologyTiers(plan.endpoints, this.#shared.node);
  }

  /**
   * The endpoint for a new connection: tier by tier, leaving out ejected and
   * excluded endpoints. When every endpoint is ejected it tries them anyway (a
   * guess beats a certain refusal, as Envoy's panic threshold does).
   */
  choose(clientIp: string, exclude: ReadonlySet<string>): EndpointTarget | undefined {
    const load = (key: string) => this.#shared.active.get(key) ?? 0;
    const outliers = this.#shared.outliers;
    // Paths come and go: with a topology the tiers are worked out per connection (a pass over the endpoints).
    const tiers = this.#shared.topology ? topologyTiers(this.#plan.endpoints, this.#shared.node, this.#shared.topology) : this.#tiers;
    for (const tier of tiers) {
      // The common case, no endpoint with a failure on record, allocates nothing here.
      const ejected = outliers.tracked === 0 ? noKeys : tier.filter((endpoint) => outliers.isEjected(endpoint.key)).map((endpoint) => endpoint.key);
      const skip = ejected.length > 0 ? new Set([...exclude, ...ejected]) : exclude;
      const chosen = this.#picker.pick(tier, { clientIp, load, exclude: skip });
      if (chosen) return chosen;
    }
    for (const tier of tiers) {
      const chosen = this.#picker.pick(tier, { clientIp, load, exclude });
      if (chosen) return chosen;
    }
    return undefined;
  }

  #makePicker(plan: Plan): Picker {
    const picker = createPicker({ policy: plan.policy.policy, random: this.#shared.random });
    if (plan.policy.affinityTimeoutMs === undefined) return picker;
    return withSessionAffinity(picker, { timeoutMs: plan.policy.affinityTimeoutMs, clock: this.#shared.clock });
  }
}
