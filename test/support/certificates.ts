/**
 * Self-signed certificates for tests of TLS routing (the gateway's terminated
 * and passed-through TLS, TLS Secrets in manifests), made by the `openssl` CLI
 * (scripts/packages.d): a key and a certificate for some DNS names, in PEM, and
 * the same as a Kubernetes Secret of type kubernetes.io/tls.
 *
 * ```ts
 * const { cert, key } = selfSignedCertificate(["shop.example.com"]);
 * const secret = tlsSecretManifest({ name: "shop-cert", namespace: "demo" }, { cert, key });
 * ```
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made = new Map<string, { cert: string; key: string }>();

/** A fresh EC P-256 key and a self-signed certificate for `hosts` (the first is also the CN), valid one day; cached per host list. */
export function selfSignedCertificate(hosts: string[]): { cert: string; key: string } {
  const id = hosts.join(",");
  const cached = made.get(id);
  if (cached) return cached;
  const dir = mkdtempSync(join(tmpdir(), "leafmesh-cert-"));
  try {
    const key = join(dir, "tls.key");
    const cert = join(dir, "tls.crt");
    const san = hosts.map((host) => (/^[\d.]+$/.test(host) ? `IP:${host}` : `DNS:${host}`)).join(",");
    try {
      execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", `/CN=${hosts[0]}`, "-addext", `subjectAltName=${san}`], { stdio: "pipe" });
    } catch (error) {
      throw new Error("openssl is needed to make test certificates: apt-get install -y openssl (scripts/install.sh does)", { cause: error });
    }
    const pair = { cert: readFileSync(cert, "utf8"), key: readFileSync(key, "utf8") };
    made.set(id, pair);
    return pair;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A Secret of type kubernetes.io/tls holding the pair, as `kubectl create secret tls` writes it. */
export function tlsSecretManifest(meta: { name: string; namespace: string }, pair: { cert: string; key: string }): object {
  return {
    apiVersion: "v1",
    kind: "Secret",
    type: "kubernetes.io/tls",
    metadata: meta,
    data: { "tls.crt": Buffer.from(pair.cert).toString("base64"), "tls.key": Buffer.from(pair.key).toString("base64") },
  };
}
