/**
 * The hubs' TLS certificate issued again (`leafmesh keys hub-cert`): a new key and certificate under DIR/hub,
 * signed by the mesh CA, for the host names and addresses given, or those the current certificate names. For a
 * certificate that nears its end (825 days from `keys init`), and for a hub reached by a name the first one did
 * not list (a new hub, a moved address): agents verify the hubs by name, and without this the only way to a new
 * name was a new mesh. The CA stays, so nodes and sites keep their bundles. A running hub takes the new files
 * when they land in its copy of the keys (trust/bundle-watch.ts, `watchHubCertificate`).
 *
 * ```ts
 * const { hosts, notAfter } = await reissueHubCertificate({ dir: "/srv/mesh-keys", hosts: ["hub-1.example.net"] });
 * ```
 */
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";
import { LeafmeshError } from "../lib/errors.ts";
import { readKeyState } from "./key-store.ts";
import { withKeysLock } from "./keys-lock.ts";
import { checkCertificateHosts, issueCertificate } from "./tls.ts";

/** The host names and addresses a certificate names (its subjectAltName), in its order. */
export function certificateHosts(certPem: string | Buffer): string[] {
  const names = new X509Certificate(certPem).subjectAltName ?? "";
  return names
    .split(/,\s*/)
    .map((entry) => /^(?:DNS|IP Address):(.+)$/.exec(entry.trim())?.[1])
    .filter((host): host is string => host !== undefined)
    // IPv6 as openssl prints it (0:0:0:0:0:0:0:1) in its short form (::1), as it was given.
    .map((host) => (host.includes(":") ? new URL(`http://[${host}]/`).hostname.slice(1, -1) : host.toLowerCase()));
}

export async function reissueHubCertificate(options: { dir: string; hosts?: string[]; days?: number }): Promise<{ hosts: string[]; notAfter: string; certFile: string }> {
  const dir = options.dir;
  return withKeysLock(dir, async () => {
    readKeyState(dir); // says clearly when DIR holds no mesh
    const certFile = join(dir, "hub", "hub.crt");
    let current: string[] = [];
    try {
      current = certificateHosts(readFileSync(certFile));
    } catch (error) {
      if (!options.hosts) throw new LeafmeshError("TRUST_FAILED", `${certFile} cannot be read, so its host names are unknown: give them with --hub-hosts`, { cause: error });
    }
    const hosts = options.hosts ?? current;
    checkCertificateHosts(hosts, "--hub-hosts");
    await issueCertificate({
      caCertFile: join(dir, "ca", "ca.crt"),
      caKeyFile: join(dir, "ca", "ca.key"),
      certFile,
      keyFile: join(dir, "hub", "hub.key"),
      commonName: "leafmesh hub",
      hosts,
      days: options.days,
    });
    return { hosts, notAfter: new X509Certificate(readFileSync(certFile)).validTo, certFile };
  });
}

/**
 * Refuses route and gateway URLs whose host the hubs' certificate does not name. Routes and gateways run TLS
 * and check the far hub's certificate by the name dialled: a hub missing from `--hub-hosts` never joined, and
 * each hub said nats-server's "x509: certificate is valid for …, not hub-3.example.net" every second.
 */
export function checkPeerHostsInCertificate(certFile: string, keysDir: string, peers: { flag: string; urls: readonly string[]; dialledBy?: string }[]): void {
  const cert = new X509Certificate(readFileSync(certFile));
  for (const { flag, urls, dialledBy = "hubs check each other's certificate" } of peers) {
    for (const url of urls) {
      let host: string;
      try {
        host = new URL(url).hostname.replace(/^\[|\]$/g, "");
      } catch {
        continue; // the URL's own check says what is wrong with it
      }
      if ((isIP(host) ? cert.checkIP(host) : cert.checkHost(host, { subject: "never" })) !== undefined) continue;
      const names = certificateHosts(cert.toString());
      // A hub's copy of the keys holds no CA key: the certificate is issued where the mesh's keys directory is.
      const dir = existsSync(join(keysDir, "ca", "ca.key")) ? keysDir : "MESH-KEYS (the mesh's keys directory, where keys init ran)";
      throw new LeafmeshError(
        "CONFIG_INVALID",
        `${flag} ${url}: the hubs' certificate (${certFile}) does not name ${host} (it names ${names.join(", ")}), and ${dialledBy} by the name dialled: ` +
          `issue it again with every hub's name, \`leafmesh keys hub-cert --dir ${dir} --hub-hosts ${[...new Set([...names, host])].join(",")}\`, and copy hub/ to every hub`,
      );
    }
  }
}
