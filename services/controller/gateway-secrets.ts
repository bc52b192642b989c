/**
 * Which TLS Secrets the hub publishes: only those a Gateway of their own
 * namespace names for terminating TLS (an Istio server's `credentialName`, a
 * Gateway API listener's `certificateRefs`). Every node mirrors the catalog, so
 * a published key is readable on every node; a TLS Secret that no gateway uses
 * (cert-manager's, an application's own) stays at the hub. A Secret named by a
 * Gateway added later is published with it. Pure.
 *
 * ```ts
 * const desired = withoutUnreferencedSecrets(source.snapshot()); // the catalog minus unused TLS Secrets
 * ```
 */
import { catalogKey, type CatalogObject } from "../../bus/catalog.ts";

/** The catalog keys of the TLS Secrets the catalog's Gateways name. */
export function referencedSecretKeys(catalog: ReadonlyMap<string, CatalogObject>): Set<string> {
  const keys = new Set<string>();
  const add = (namespace: string, name: string) => keys.add(catalogKey({ kind: "TLSSecret", namespace, name }));
  for (const object of catalog.values()) {
    if (object.kind === "IstioGateway") {
      for (const server of object.servers) if (server.tls?.credentialName) add(object.namespace, server.tls.credentialName);
    } else if (object.kind === "Gateway") {
      // Normalisation refused references into other namespaces (they need a ReferenceGrant).
      for (const listener of object.listeners) for (const ref of listener.tls?.certificateRefs ?? []) if (ref.namespace === object.namespace) add(ref.namespace, ref.name);
    }
  }
  return keys;
}

/** The catalog to publish: everything but the TLS Secrets no Gateway names. */
export function withoutUnreferencedSecrets(catalog: ReadonlyMap<string, CatalogObject>): ReadonlyMap<string, CatalogObject> {
  let hasSecrets = false;
  for (const object of catalog.values()) {
    if (object.kind === "TLSSecret") {
      hasSecrets = true;
      break;
    }
  }
  if (!hasSecrets) return catalog;
  const referenced = referencedSecretKeys(catalog);
  const published = new Map<string, CatalogObject>();
  for (const [key, object] of catalog) if (object.kind !== "TLSSecret" || referenced.has(key)) published.set(key, object);
  return published;
}
