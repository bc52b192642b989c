/**
 * The cluster zone kept up to date one Service at a time: a catalog change
 * re-derives the records of the Services it touches (serviceZoneRecords) and
 * swaps them in, and says which names' answers changed, so the server drops and
 * encodes again only those. At 10,000 services a whole rebuild took ~100 ms and
 * ran again after every batch of changes while a fresh agent loaded its catalog
 * (and a change waited up to 500 ms to show); now a change costs what its
 * Services cost.
 *
 * ```ts
 * const zone = new ZoneIndex({ clusterDomain: "cluster.local" });
 * zone.rebuild(reader);
 * const changedNames = zone.apply(reader, ["svc.shop.web"]);
 * answerFromZone(zone.zone, "web.shop.svc.cluster.local", "A", "IN");
 * ```
 */
import { isIPv4, isIPv6 } from "node:net";
import { kindOfKey, type CatalogReader } from "../../bus/catalog.ts";
import { emptyRecords, nameserverName, normaliseDomain, serviceZoneRecords, specVersion, type ClusterZone, type NameRecords, type ServiceRecords, type ZoneOptions } from "./zone-records.ts";

export class ZoneIndex {
  readonly zone: ClusterZone;
  /** Each Service's part of the zone, by `namespace/name`. */
  readonly #services = new Map<string, ServiceRecords>();
  /** Which Service a slice belongs to, by slice key: a deleted slice no longer says. */
  readonly #sliceOwner = new Map<string, string>();
  /** How many Services use each namespace name (an empty non-terminal while one does). */
  readonly #namespaces = new Map<string, number>();
  /** ZoneOptions.withheld: such a Service's names are out of the zone and its base is in zone.withheld. */
  readonly #withheld: ZoneOptions["withheld"];
  /** The records of `ns.dns.<domain>`, the apex's NS target: the server's own address once it is bound (setNameserverAddresses). */
  #nameserver: NameRecords = emptyRecords();

  constructor(options: ZoneOptions = {}) {
    const domain = normaliseDomain(options.clusterDomain ?? "cluster.local");
    this.zone = { domain, ttl: options.ttl ?? 5, serial: 1, names: new Map(), pointers: new Map(), withheld: new Set() };
    this.#withheld = options.withheld;
    this.#reset();
  }

  #reset(): void {
    const { names, domain } = this.zone;
    names.clear();
    this.zone.pointers.clear();
    this.#services.clear();
    this.#sliceOwner.clear();
    this.#namespaces.clear();
    this.zone.withheld.clear();
    names.set(domain, emptyRecords());
    names.set(`svc.${domain}`, emptyRecords());
    names.set(`dns-version.${domain}`, { ...emptyRecords(), txt: [specVersion] });
    names.set(`dns.${domain}`, emptyRecords());
    names.set(nameserverName(domain), this.#nameserver);
  }

  /**
   * The addresses `ns.dns.<domain>` answers with (the apex NS record's target, as CoreDNS names it): a resolver
   * that primes the zone (unbound's `stub-prime: yes`) asks the apex for NS and then asks those addresses.
   * Empty when the server listens on a wildcard address: it has no one address to name.
   */
  setNameserverAddresses(addresses: readonly string[]): void {
    this.#nameserver = { ...emptyRecords(), a: addresses.filter((ip) => isIPv4(ip)), aaaa: addresses.filter((ip) => isIPv6(ip)) };
    this.zone.names.set(nameserverName(this.zone.domain), this.#nameserver);
  }

  /** Derives the whole zone from the catalog. */
  rebuild(catalog: CatalogReader): void {
    this.#reset();
    for (const service of catalog.services()) this.#updateService(catalog, `${service.namespace}/${service.name}`, undefined);
    this.zone.serial = (this.zone.serial + 1) >>> 0 || 1;
  }

  /**
   * Brings the zone up to date with changed catalog keys (the feed's batch); returns every name whose
   * answers may have changed (the Services' old and new names, reverse names, namespace names).
   */
  apply(catalog: CatalogReader, keys: readonly string[]): Set<string> {
    const services = new Set<string>();
    for (const key of keys) {
      const kind = kindOfKey(key);
      const object = catalog.get(key);
      if (kind === "Service") {
        const rest = key.slice(key.indexOf(".") + 1);
        const dot = rest.indexOf(".");
        services.add(`${rest.slice(0, dot)}/${rest.slice(dot + 1)}`);
      } else if (kind === "EndpointSlice") {
        const before = this.#sliceOwner.get(key);
        if (before) services.add(before);
        if (object?.kind === "EndpointSlice") {
          const owner = `${object.namespace}/${object.serviceName}`;
          this.#sliceOwner.set(key, owner);
          services.add(owner);
        } else this.#sliceOwner.delete(key);
      }
      // DestinationRules have no part in DNS.
    }
    const changed = new Set<string>();
    for (const ref of services) this.#updateService(catalog, ref, changed);
    if (services.size > 0) this.zone.serial = (this.zone.serial + 1) >>> 0 || 1;
    return changed;
  }

  #updateService(catalog: CatalogReader, ref: string, changed: Set<string> | undefined): void {
    const slash = ref.indexOf("/");
    const service = catalog.service(ref.slice(0, slash), ref.slice(slash + 1));
    const slices = service ? catalog.slices(service.namespace, service.name) : [];
    if (changed === undefined) for (const slice of slices) this.#sliceOwner.set(`eps.${slice.namespace}.${slice.name}`, ref);
    const base = `${ref.slice(slash + 1)}.${ref.slice(0, slash)}.svc.${this.zone.domain}`.toLowerCase();
    const withheld = service !== undefined && this.#withheld?.(service, slices) === true;
    if (withheld !== this.zone.withheld.has(base)) {
      if (withheld) this.zone.withheld.add(base);
      else this.zone.withheld.delete(base);
      changed?.add(base);
    }
    // A withheld Service keeps its namespace name in the zone: `<ns>.svc.<domain>` answers NODATA, not NXDOMAIN,
    // while the Service's own name answers SERVFAIL. An NXDOMAIN there says nothing exists below it (RFC 8020), and a
    // resolver that minimises its questions (unbound) then answers NXDOMAIN for the Service and caches it.
    const next = !service ? undefined : withheld ? { names: [], namespaceName: `${ref.slice(0, slash)}.svc.${this.zone.domain}`.toLowerCase(), pointers: [] } : serviceZoneRecords(service, slices, this.zone.domain);
    const previous = this.#services.get(ref);
    if (previous) this.#remove(previous, changed);
    if (next) {
      this.#add(next, changed);
      this.#services.set(ref, next);
    } else this.#services.delete(ref);
  }

  #add(records: ServiceRecords, changed: Set<string> | undefined): void {
    const { names, pointers } = this.zone;
    for (let index = 0; index < records.names.length; index += 2) {
      const name = records.names[index] as string;
      names.set(name, records.names[index + 1] as NameRecords);
      changed?.add(name);
    }
    const uses = (this.#namespaces.get(records.namespaceName) ?? 0) + 1;
    this.#namespaces.set(records.namespaceName, uses);
    if (uses === 1 && !names.has(records.namespaceName)) {
      names.set(records.namespaceName, emptyRecords());
      changed?.add(records.namespaceName);
    }
    // A (reverse name, target) pair is one Service's alone: its target is the Service's own name, or a host name
    // under it (zone-records.ts), and a Service's old records are removed before its new ones are added. So a
    // pair is in `pointers` or not, with no count of who else publishes it.
    for (let index = 0; index < records.pointers.length; index += 2) {
      const reverse = records.pointers[index];
      const target = records.pointers[index + 1];
      const targets = pointers.get(reverse);
      if (targets?.includes(target)) continue;
      // A new array: an answer being encoded may hold the old one.
      pointers.set(reverse, targets ? [...targets, target] : [target]);
      changed?.add(reverse);
    }
  }

  #remove(records: ServiceRecords, changed: Set<string> | undefined): void {
    const { names, pointers } = this.zone;
    for (let index = 0; index < records.names.length; index += 2) {
      const name = records.names[index] as string;
      if (names.get(name) !== records.names[index + 1]) continue;
      names.delete(name);
      changed?.add(name);
    }
    const uses = (this.#namespaces.get(records.namespaceName) ?? 1) - 1;
    if (uses > 0) this.#namespaces.set(records.namespaceName, uses);
    else {
      this.#namespaces.delete(records.namespaceName);
      names.delete(records.namespaceName);
      changed?.add(records.namespaceName);
    }
    for (let index = 0; index < records.pointers.length; index += 2) {
      const reverse = records.pointers[index];
      const target = records.pointers[index + 1];
      const before = pointers.get(reverse);
      if (!before?.includes(target)) continue;
      changed?.add(reverse);
      const targets = before.filter((existing) => existing !== target);
      if (targets.length === 0) pointers.delete(reverse);
      else pointers.set(reverse, targets);
    }
  }
}

/** Builds the whole zone of one catalog version (tests, tools: the server keeps a ZoneIndex). */
export function buildClusterZone(catalog: CatalogReader, options: ZoneOptions = {}): ClusterZone {
  const index = new ZoneIndex(options);
  index.rebuild(catalog);
  index.zone.serial = catalog.version >>> 0;
  return index.zone;
}
