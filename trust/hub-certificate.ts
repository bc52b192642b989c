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
import { readFileSync } from "node:fs";
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
