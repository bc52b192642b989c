import { describe, expect, it } from "vitest";
import { catalogKey, type CatalogObject } from "../../bus/catalog.ts";
import { certificateSecrets, ingressManifests } from "../../test/support/gateway-manifests.ts";
import { selfSignedCertificate, tlsSecretManifest } from "../../test/support/certificates.ts";
import { normalizeObject } from "./normalize.ts";
import { withoutUnreferencedSecrets } from "./gateway-secrets.ts";

const ports = { http: 80, https: 443, tls: 9443, tcp: 9000 };
const catalogOf = (raws: object[]) => {
  const catalog = new Map<string, CatalogObject>();
  for (const raw of raws) {
    const result = normalizeObject(raw);
    if (result.status === "ok") catalog.set(catalogKey(result.object), result.object);
  }
  return catalog;
};
const unused = tlsSecretManifest({ name: "app-cert", namespace: "shop" }, selfSignedCertificate(["app.example.com"]));
const elsewhere = tlsSecretManifest({ name: "secure-cert", namespace: "other" }, selfSignedCertificate(["secure.example.com"]));
const secretKeys = (catalog: ReadonlyMap<string, CatalogObject>) => [...catalog.keys()].filter((key) => key.startsWith("tls.")).sort();

describe("which TLS Secrets are published", () => {
  it.each(["istio", "gateway-api"] as const)("only those a %s Gateway of their namespace names", (style) => {
    const catalog = catalogOf([...ingressManifests(style, { ports }), ...certificateSecrets(), unused, elsewhere]);
    expect(secretKeys(catalog)).toEqual(["tls.other.secure-cert", "tls.shop.app-cert", "tls.shop.secure-cert", "tls.shop.term-cert"]);
    const published = withoutUnreferencedSecrets(catalog);
    expect(secretKeys(published)).toEqual(["tls.shop.secure-cert", "tls.shop.term-cert"]);
    // Everything else goes out as it is.
    expect([...published.keys()].filter((key) => !key.startsWith("tls.")).sort()).toEqual([...catalog.keys()].filter((key) => !key.startsWith("tls.")).sort());
  });

  it("publishes none without a Gateway, and hands back the catalog itself when it holds no Secret", () => {
    const secrets = catalogOf([...certificateSecrets(), unused]);
    expect(withoutUnreferencedSecrets(secrets).size).toBe(0);
    const plain = catalogOf(ingressManifests("istio", { ports }));
    expect(withoutUnreferencedSecrets(plain)).toBe(plain);
  });
});
