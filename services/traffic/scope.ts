/**
 * Which Services a reconcile must plan again. The traffic actor re-plans only the Services whose
 * catalog keys changed since the last reconcile ("all" for the first one and after a change that
 * touches every Service, such as a DestinationRule's): a change to one of 10,000 services re-plans
 * one. It keeps which plan keys each Service owns (the listeners it may replace) and which
 * EndpointSlice belongs to which Service (a deleted slice is no longer in the catalog to ask).
 */
import { catalogKey } from "../../bus/catalog.ts";
import type { CatalogReader } from "../../bus/catalog.ts";
import { affectedServices, planService, serviceRef, type RejectedService, type ServicePortPlan } from "./plan.ts";

export class PlanScope {
  readonly #planKeysByService = new Map<string, string[]>();
  readonly #slicesByService = new Map<string, string[]>();
  readonly #sliceOwners = new Map<string, string>();
  readonly #rejectedByService = new Map<string, RejectedService>();
  #pending: Set<string> | "all" = "all";

  readonly #reader: () => CatalogReader;
  /** The node planned for (internalTrafficPolicy Local keeps its endpoints alone). */
  readonly #node: string | undefined;

  constructor(reader: () => CatalogReader, node?: string) {
    this.#reader = reader;
    this.#node = node;
  }

  /** Catalog keys changed: the Services they belong to are planned again at the next reconcile. */
  noteChanged(keys: string[]): void {
    if (this.#pending === "all") return;
    const affected = affectedServices(keys, this.#reader(), (key) => this.#sliceOwners.get(key));
    if (affected === "all") this.#pending = "all";
    else for (const service of affected) this.#pending.add(service);
  }

  /** A Service whose listener failed to open: tried again at the next reconcile. */
  retry(namespace: string, service: string): void {
    if (this.#pending !== "all") this.#pending.add(serviceRef(namespace, service));
  }

  /** Services left out and why. */
  rejected(): RejectedService[] {
    return [...this.#rejectedByService.values()];
  }

  /**
   * Takes the pending scope: the wanted plans of its Services, and the listener keys (of `current`
   * when the scope is "all") that they may replace; the book-keeping brought up to date.
   */
  take(current: Iterable<string>): { desired: Map<string, ServicePortPlan>; considered: string[] } {
    const scope = this.#pending;
    this.#pending = new Set();
    const reader = this.#reader();
    let refs: Iterable<string>;
    let considered: string[];
    if (scope === "all") {
      considered = [...current];
      this.#planKeysByService.clear();
      this.#slicesByService.clear();
      this.#sliceOwners.clear();
      this.#rejectedByService.clear();
      refs = [...reader.services()].map((service) => serviceRef(service.namespace, service.name));
    } else {
      considered = [];
      for (const ref of scope) {
        considered.push(...(this.#planKeysByService.get(ref) ?? []));
        for (const slice of this.#slicesByService.get(ref) ?? []) this.#sliceOwners.delete(slice);
        this.#planKeysByService.delete(ref);
        this.#slicesByService.delete(ref);
        this.#rejectedByService.delete(ref);
      }
      refs = scope;
    }
    const desired = new Map<string, ServicePortPlan>();
    for (const ref of refs) {
      const slash = ref.indexOf("/");
      const service = reader.service(ref.slice(0, slash), ref.slice(slash + 1));
      if (!service) continue;
      const slices = reader.slices(service.namespace, service.name).map((slice) => catalogKey(slice));
      if (slices.length > 0) this.#slicesByService.set(ref, slices);
      for (const slice of slices) this.#sliceOwners.set(slice, ref);
      const planned = planService(service, reader, this.#node);
      if (planned.rejected) this.#rejectedByService.set(ref, planned.rejected);
      if (planned.plans.length > 0) this.#planKeysByService.set(ref, planned.plans.map((plan) => plan.key));
      for (const plan of planned.plans) desired.set(plan.key, plan);
    }
    return { desired, considered };
  }
}
