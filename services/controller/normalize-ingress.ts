/**
 * What the two ingress configurations share when they are normalised (Istio's,
 * normalize-istio.ts; the Gateway API's, normalize-gateway-api.ts): durations,
 * host names and wildcards, the node selector annotation, and the TLS Secrets
 * both name for terminated TLS. Pure: no I/O (parsing a PEM certificate and key
 * is computation).
 *
 * ```ts
 * durationMs("1m30s");                       // 90_000
 * checkHostname("*.example.com", "spec.hosts[0]", problems, { wildcard: true });
 * const secret = normalizeTlsSecret(raw, problems); // undefined: not a kubernetes.io/tls Secret (ignored)
 * ```
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import * as z from "../../lib/schema/index.ts";
import type { TlsSecret } from "../../bus/catalog-gateway.ts";
import { checkMetadata, dns1123Subdomain, metadata, schemaProblems, type FieldProblem } from "./normalize-fields.ts";

/**
 * "10s", "1.5s", "250ms", "1h2m" (Go's time.ParseDuration, which Istio reads, and the Gateway API's GEP-2257 form) in
 * milliseconds; undefined when the text is no duration.
 */
export function durationMs(text: string): number | undefined {
  const whole = /^((\d+(\.\d+)?)(h|ms|m|s))+$/;
  if (!whole.test(text)) return undefined;
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1_000, ms: 1 };
  let total = 0;
  for (const part of text.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s)/g)) total += Number(part[1]) * units[part[2]];
  return Math.round(total);
}

/** A duration field: milliseconds, undefined for "0s" (no limit, as both APIs read it), a problem when malformed. */
export function durationField(text: string | undefined, field: string, problems: FieldProblem[]): number | undefined {
  if (text === undefined) return undefined;
  const ms = durationMs(text);
  if (ms === undefined) {
    problems.push({ field, message: `'${text}' is not a duration (for example 10s, 1.5s, 250ms, 1m30s)` });
    return undefined;
  }
  return ms > 0 ? ms : undefined;
}

/**
 * A host name as routes and listeners write it, lower-cased: a DNS name, or with `wildcard` a leading "*." label or
 * "*" alone. Returns it lower-cased, or pushes a problem.
 */
export function checkHostname(host: string, field: string, problems: FieldProblem[], options: { wildcard: boolean }): string {
  const lower = host.toLowerCase().replace(/\.$/, "");
  if (options.wildcard && (lower === "*" || (lower.startsWith("*.") && dns1123Subdomain.test(lower.slice(2))))) return lower;
  if (dns1123Subdomain.test(lower)) return lower;
  problems.push({ field, message: `'${host}' is not a valid host name${options.wildcard ? " (a DNS name, '*.' followed by one, or '*')" : ""}` });
  return lower;
}

export { nodeSelectorAnnotation } from "../../bus/catalog-gateway.ts";

/** `key=value,key2=value2` → a label map; a problem (and an empty map) when malformed. */
export function parseNodeSelector(text: string, field: string, problems: FieldProblem[]): Record<string, string> {
  const selector: Record<string, string> = {};
  for (const part of text.split(",").map((entry) => entry.trim()).filter(Boolean)) {
    const match = /^([A-Za-z0-9][-A-Za-z0-9_./]*)=([-A-Za-z0-9_.]*)$/.exec(part);
    if (!match) {
      problems.push({ field, message: `'${part}' is not key=value (a node selector is key=value pairs separated by commas)` });
      continue;
    }
    selector[match[1]] = match[2];
  }
  return selector;
}

/** The Kubernetes Secret type of a TLS certificate and its key. */
export const tlsSecretType = "kubernetes.io/tls";

const rawSecret = z.object({
  apiVersion: z.literal("v1", { error: "must be v1 for a Secret" }),
  kind: z.literal("Secret"),
  metadata,
  type: z.string().optional(),
  data: z.record(z.string(), z.string()).nullable().optional(),
  stringData: z.record(z.string(), z.string()).nullable().optional(),
});

/**
 * A Secret of type kubernetes.io/tls as a catalog object: `data["tls.crt"]` and `data["tls.key"]` (base64, or
 * `stringData` as manifests may write them) hold a PEM certificate chain and its private key, which must parse and
 * belong together. Any other Secret type: undefined, and no problem (leafmesh has no use for it).
 */
export function normalizeTlsSecret(raw: unknown, problems: FieldProblem[]): TlsSecret | undefined {
  const parsed = rawSecret.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    problems.push(...schemaProblems(parsed.error));
    return undefined;
  }
  const secret = parsed.data;
  if (secret.type !== tlsSecretType) return undefined;
  const namespace = checkMetadata(secret.metadata, dns1123Subdomain, "a DNS subdomain (lowercase letters, digits, '-' and '.')", problems);
  const read = (key: string): string | undefined => {
    const text = secret.stringData?.[key];
    if (text !== undefined) return text;
    const encoded = secret.data?.[key];
    if (encoded === undefined) {
      problems.push({ field: `data["${key}"]`, message: `is required in a Secret of type ${tlsSecretType}` });
      return undefined;
    }
    if (!/^[A-Za-z0-9+/\s]*={0,2}\s*$/.test(encoded)) {
      problems.push({ field: `data["${key}"]`, message: "is not base64" });
      return undefined;
    }
    return Buffer.from(encoded, "base64").toString("utf8");
  };
  const certificate = read("tls.crt");
  const privateKey = read("tls.key");
  if (certificate === undefined || privateKey === undefined) return undefined;
  let x509: X509Certificate | undefined;
  try {
    x509 = new X509Certificate(certificate);
  } catch {
    problems.push({ field: 'data["tls.crt"]', message: "is not a PEM certificate" });
  }
  try {
    const key = createPrivateKey(privateKey);
    if (x509 && !x509.checkPrivateKey(key)) problems.push({ field: 'data["tls.key"]', message: "is not the private key of the certificate in tls.crt" });
  } catch {
    problems.push({ field: 'data["tls.key"]', message: "is not a PEM private key" });
  }
  return {
    kind: "TLSSecret",
    namespace,
    name: secret.metadata.name,
    certificate,
    privateKey,
    labels: secret.metadata.labels ?? {},
    annotations: secret.metadata.annotations ?? {},
  };
}

/** "not supported by the leafmesh gateway (…)": a field of the API the gateway cannot honour, refused rather than ignored. */
export function unsupported(field: string, what: string, problems: FieldProblem[]): void {
  problems.push({ field, message: `is not supported by the leafmesh gateway (${what})` });
}
