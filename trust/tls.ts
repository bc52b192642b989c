/**
 * The mesh's TLS material, made with the `openssl` CLI (Debian package
 * `openssl`): one CA per mesh, a certificate per hub and per node signed by it.
 * Private keys never touch the disk with loose permissions: openssl prints them
 * to a pipe and writeSecretFile stores them 0600.
 *
 * ```ts
 * await createCertificateAuthority({ certFile, keyFile, name: "leafmesh mesh CA" });
 * await issueCertificate({ caCertFile, caKeyFile, certFile, keyFile, commonName: "edge-a", hosts: [] });
 * ```
 */
import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { PeerCertificate } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LeafmeshError } from "../lib/errors.ts";
import { writeFileWhole, writeSecretFile } from "./secret-files.ts";

async function openssl(args: string[], what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("openssl", args, { encoding: "utf8", maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      if (error) {
        const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
        reject(
          new LeafmeshError(
            missing ? "TOOL_MISSING" : "TRUST_FAILED",
            missing ? `${what}: the openssl command is missing (Debian: apt-get install -y openssl)` : `${what}: openssl failed: ${stderr.trim()}`,
            { cause: error },
          ),
        );
      } else resolve(stdout);
    });
  });
}

async function newPrivateKey(keyFile: string, what: string): Promise<void> {
  // Printed to stdout (a pipe) and stored 0600 by us: openssl's own file would follow the umask.
  const pem = await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], what);
  writeSecretFile(keyFile, pem);
}

/**
 * How far back a certificate's validity starts. An edge box without a working RTC boots with the time it
 * last saved (fake-hwclock) until NTP answers, which a factory network may never let it do: a certificate
 * valid only from the minute it was issued would be refused there ("not yet valid") for days.
 */
const backdateMs = 7 * 24 * 3_600_000;

/** openssl's GeneralizedTime: YYYYMMDDHHMMSSZ. */
const asn1Time = (at: number) => `${new Date(at).toISOString().replace(/[-:T]/g, "").slice(0, 14)}Z`;

/**
 * Signs `csrFile` with `openssl ca` (the one openssl command of 3.0 that sets a certificate's start), valid
 * from backdateMs ago for `days`, with `extFile`'s extensions only and the request's subject as it is. Without
 * `caCertFile` the request is signed by its own key (a CA's certificate).
 */
async function caSign(options: { scratch: string; csrFile: string; caKeyFile: string; caCertFile?: string; extFile: string; days: number; what: string }): Promise<string> {
  const { scratch } = options;
  const config = join(scratch, "ca.cnf");
  writeFileSync(join(scratch, "index.txt"), "");
  writeFileSync(
    config,
    ["[ca]", "default_ca = leafmesh", "[leafmesh]", `database = ${join(scratch, "index.txt")}`, `new_certs_dir = ${scratch}`, `serial = ${join(scratch, "serial")}`, "default_md = sha256", "policy = any", "unique_subject = no", "[any]", "commonName = supplied", ""].join("\n"),
  );
  const out = join(scratch, "signed.crt");
  const now = Date.now();
  let end = now + options.days * 86_400_000;
  if (options.caCertFile) {
    // Nothing the CA signs is valid past the CA's own end: a certificate said to end later (825 days from an issue in
    // the CA's last two years) made every "ends in N days" warning and status line tell a date after the one on
    // which its peers stop accepting it. It ends with the CA, and the warnings come before that day.
    const caEnd = Date.parse(new X509Certificate(readFileSync(options.caCertFile)).validTo);
    if (caEnd <= now) {
      throw new LeafmeshError(
        "TRUST_FAILED",
        `the mesh CA (${options.caCertFile}) ended at ${new Date(caEnd).toISOString()}: nothing it signs is valid. The CA cannot be renewed in place (docs/trust.md, "Known limits")`,
      );
    }
    end = Math.min(end, caEnd);
  }
  await openssl(
    [
      "ca", "-batch", "-config", config, "-in", options.csrFile, "-out", out, "-keyfile", options.caKeyFile,
      ...(options.caCertFile ? ["-cert", options.caCertFile] : ["-selfsign"]),
      "-startdate", asn1Time(now - backdateMs), "-enddate", asn1Time(end),
      "-extfile", options.extFile, "-notext", "-rand_serial", "-preserveDN",
    ],
    options.what,
  );
  return readFileSync(out, "utf8");
}

export async function createCertificateAuthority(options: { certFile: string; keyFile: string; name: string; days?: number }): Promise<void> {
  await newPrivateKey(options.keyFile, "CA key");
  const scratch = mkdtempSync(join(tmpdir(), "leafmesh-ca-"));
  try {
    const csrFile = join(scratch, "ca.csr");
    const extFile = join(scratch, "extensions.cnf");
    writeFileSync(csrFile, await openssl(["req", "-new", "-key", options.keyFile, "-subj", `/CN=${options.name}`], "CA certificate request"));
    writeFileSync(extFile, ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid:always"].join("\n"));
    writeFileWhole(options.certFile, await caSign({ scratch, csrFile, caKeyFile: options.keyFile, extFile, days: options.days ?? 3650, what: "CA certificate" }));
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

export interface CertificateRequest {
  caCertFile: string;
  caKeyFile: string;
  certFile: string;
  keyFile: string;
  commonName: string;
  /** Host names and IP addresses the certificate is valid for (subjectAltName). */
  hosts: string[];
  /** @default 825 — the longest lifetime common TLS clients accept for a leaf certificate. */
  days?: number;
}

/** A key and a certificate for both ends of TLS (serverAuth and clientAuth): hubs and nodes verify each other. */
export async function issueCertificate(request: CertificateRequest): Promise<void> {
  const csr = await makeCertificateRequest({ keyFile: request.keyFile, commonName: request.commonName });
  writeFileWhole(request.certFile, await signCertificateRequest({ ...request, csrPem: csr }));
}

/**
 * A new private key (stored 0600 at `keyFile`) and a certificate request for it: on a joining node
 * (trust/enrolment.ts), the key never leaves the machine; only the request goes to the hub.
 */
export async function makeCertificateRequest(options: { keyFile: string; commonName: string; /** Use the key already at keyFile (a request asked again). */ keepKey?: boolean }): Promise<string> {
  if (!(options.keepKey && existsSync(options.keyFile))) await newPrivateKey(options.keyFile, `key of ${options.commonName}`);
  return openssl(["req", "-new", "-key", options.keyFile, "-subj", `/CN=${options.commonName}`], `certificate request of ${options.commonName}`);
}

/**
 * Checks that a certificate request is signed by its own key (the asker holds the private key) and
 * asks for exactly `/CN=<expected>`, and nothing else in its subject. Throws TRUST_FAILED otherwise.
 * What the request asks beyond its key and subject (extensions) is never copied: signCertificateRequest
 * writes its own.
 */
export async function checkCertificateRequest(csrPem: string, expectedCommonName: string): Promise<void> {
  const scratch = mkdtempSync(join(tmpdir(), "leafmesh-csr-"));
  try {
    const csrFile = join(scratch, "request.csr");
    writeFileSync(csrFile, csrPem);
    const text = await openssl(["req", "-in", csrFile, "-noout", "-verify", "-subject", "-nameopt", "RFC2253"], "checking a certificate request").catch((cause: unknown) => {
      throw new LeafmeshError("TRUST_FAILED", "the certificate request is not signed by its own key (or is no certificate request)", { cause });
    });
    const subject = /subject=(.*)/.exec(text)?.[1]?.trim();
    if (subject !== `CN=${expectedCommonName}`) throw new LeafmeshError("TRUST_FAILED", `the certificate request asks for subject '${subject ?? "none"}', not CN=${expectedCommonName}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

const dnsName = /^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*\.?$/i;

/**
 * Refuses a host that a certificate cannot carry usefully: each is an IP address or a DNS name (a
 * leading "*." allowed). "1.2.3.999" or "hub 1.example.net" would be written in as names that no client
 * ever dials, and the mistake found only when TLS refuses the connection; a newline would write an
 * extension of its own into the certificate.
 */
export function checkCertificateHosts(hosts: readonly string[], what: string): void {
  for (const host of hosts) {
    if (isIP(host)) continue;
    const lastLabel = host.replace(/\.$/, "").split(".").pop() ?? "";
    if (host.length > 253 || !dnsName.test(host) || /^\d+$/.test(lastLabel)) {
      throw new LeafmeshError("CONFIG_INVALID", `${what}: '${host}' is not an IP address or a DNS name (e.g. hub-1.example.net, 10.0.0.5, ::1)`);
    }
  }
}

/** Signs a certificate request with the CA: the certificate (PEM) for `hosts`, with this function's extensions only. */
export async function signCertificateRequest(request: Omit<CertificateRequest, "keyFile" | "certFile"> & { csrPem: string }): Promise<string> {
  checkCertificateHosts(request.hosts, `the certificate of ${request.commonName}`);
  const scratch = mkdtempSync(join(tmpdir(), "leafmesh-csr-"));
  try {
    const csrFile = join(scratch, "request.csr");
    const extFile = join(scratch, "extensions.cnf");
    writeFileSync(csrFile, request.csrPem);
    const names = request.hosts.length > 0 ? request.hosts : [request.commonName];
    const alternativeNames = names.map((host) => (isIP(host) ? `IP:${host}` : `DNS:${host}`)).join(",");
    writeFileSync(
      extFile,
      [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=serverAuth,clientAuth",
        `subjectAltName=${alternativeNames}`,
      ].join("\n"),
    );
    return await caSign({ scratch, csrFile, caKeyFile: request.caKeyFile, caCertFile: request.caCertFile, extFile, days: request.days ?? 825, what: `certificate of ${request.commonName}` });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** The certificate's subject and validity as openssl prints them (for `keys list`). */
export async function describeCertificate(certFile: string): Promise<{ subject: string; notAfter: string }> {
  const text = await openssl(["x509", "-in", certFile, "-noout", "-subject", "-enddate"], `reading ${certFile}`);
  const subject = /subject=\s*(.*)/.exec(text)?.[1]?.trim() ?? "";
  const notAfter = /notAfter=(.*)/.exec(text)?.[1]?.trim() ?? "";
  return { subject, notAfter };
}

/**
 * TLS options for clients that hold a server's own identity (the hubs' certificate for the hub's
 * publisher, auditor and the operator's tools; a site's certificate for the site's own process):
 * they accept the server when it presents exactly that certificate, whatever host name they dialled.
 *
 * Why not the usual name check: nats.js dials an IP address (the loopback address a hub reaches
 * itself on, `--hub tls://10.0.0.5:4222`) with no TLS server name, and Node then checks the
 * certificate against `localhost` (tls.connect falls back to it for an upgraded socket), so a hub
 * whose certificate names only its real hosts (`keys init --hub-hosts hub-1.example.net,...`) could
 * not reach itself. The pin does not depend on what the certificate names, and it is stricter than
 * a name check: the chain is still verified against the mesh CA first (Node calls
 * checkServerIdentity only for a chain that verified), and then only the holder of that very key
 * passes, not any certificate of the mesh CA that happens to carry the name (a node's, issued with
 * `--hosts`). Remote clients (agents' leaf connections, sites' remotes) keep verifying the name.
 */
export function ownCertificateTls(files: { certFile: string; keyFile: string; caFile: string }, what: string): { certFile: string; keyFile: string; caFile: string; checkServerIdentity: (host: string, certificate: PeerCertificate) => Error | undefined } {
  const expected = new X509Certificate(readFileSync(files.certFile));
  return {
    ...files,
    checkServerIdentity: (host, certificate) => {
      if (certificate.raw?.equals(expected.raw)) return undefined;
      return new LeafmeshError(
        "TRUST_FAILED",
        `the server at ${host || "(no name)"} presented a certificate (${certificate.subject?.CN ?? "no CN"}, SHA-256 ${certificate.fingerprint256}) that is not ${what} (${files.certFile}, SHA-256 ${expected.fingerprint256}): another server, or a copy of the keys from before the certificate changed`,
      );
    },
  };
}
