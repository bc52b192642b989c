/**
 * A node's bundle replaced on disk while the node runs: `keys issue --rotate` writes a new one (in place when the
 * agent runs from the keys directory; otherwise the operator copies it over the old), and the running node holds
 * the old one, which the rotation revoked: every peer refuses its tunnel and the hub its login. The node notices
 * (its files read every few seconds), checks that the new bundle is whole and is this node's of the same mesh,
 * and then calls `onReplaced`, where the agent stops and starts again in place with it (cli/agent.ts). A bundle
 * still being copied (files from two issues, a key that is not the certificate's) is waited for; one that stays
 * wrong is said once, and the node runs on with what it loaded.
 *
 * ```ts
 * const watch = watchBundle({ files: security.files, node: "edge-a", log, onReplaced: (why) => restart(why) });
 * node.onStop(() => watch.stop());
 * ```
 */
import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { readCredsClaims } from "./denials.ts";
import { checkSecretFilePermissions } from "./secret-files.ts";
import type { NodeSecurity } from "./security.ts";

export interface BundleWatchOptions {
  files: Pick<NodeSecurity["files"], "creds" | "cert" | "key" | "ca" | "psk">;
  node: string;
  log: Logger;
  /** Called once, with what changed, when a whole new bundle of this node is in place. */
  onReplaced: (what: string) => void;
  /** @default 2_000 — how often the files are read (five small files). */
  intervalMs?: number;
  now?: () => number;
}

/** The bundle's files as read now: their digest, or undefined when one cannot be read (being replaced). */
function digestOf(files: BundleWatchOptions["files"]): string | undefined {
  const hash = createHash("sha256");
  try {
    for (const path of [files.creds, files.cert, files.key, files.ca, files.psk]) hash.update(readFileSync(path)).update("\0");
  } catch {
    return undefined;
  }
  return hash.digest("hex");
}

/** Why the bundle on disk cannot be started with, or undefined when it can. `loadedCa`: the CA the node runs with. */
export function bundleProblem(files: BundleWatchOptions["files"], node: string, loadedCaPem: string, now: () => number = Date.now): string | undefined {
  try {
    for (const secret of [files.creds, files.key, files.psk]) checkSecretFilePermissions(secret);
    const cert = new X509Certificate(readFileSync(files.cert));
    const ca = new X509Certificate(readFileSync(files.ca));
    if (ca.fingerprint256 !== new X509Certificate(loadedCaPem).fingerprint256) return `${files.ca} is another CA than the one this node runs with (a bundle of another mesh?)`;
    if (!cert.verify(ca.publicKey)) return `${files.cert} is not signed by the mesh CA in ${files.ca}`;
    if (!cert.checkPrivateKey(createPrivateKey(readFileSync(files.key)))) return `${files.key} is not the key of ${files.cert} (files of two issues?)`;
    const commonName = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
    if (commonName !== node) return `${files.cert} is node '${commonName ?? "?"}''s certificate, not '${node}''s`;
    if (Date.parse(cert.validTo) <= now()) return `${files.cert} expired at ${new Date(cert.validTo).toISOString()}`;
    const claims = readCredsClaims(files.creds);
    if (!claims) return `${files.creds} does not hold a NATS user JWT`;
    if (claims.name !== node) return `${files.creds} holds node '${claims.name}''s credentials, not '${node}''s`;
    if (claims.exp && claims.exp * 1000 <= now()) return `the credentials in ${files.creds} expired at ${new Date(claims.exp * 1000).toISOString()}`;
    return undefined;
  } catch (error) {
    return describeError(error);
  }
}

export function watchBundle(options: BundleWatchOptions): { stop(): void } {
  const now = options.now ?? Date.now;
  const loaded = digestOf(options.files);
  const loadedCaPem = readFileSync(options.files.ca, "utf8");
  const loadedCert = new X509Certificate(readFileSync(options.files.cert));
  /** The digest seen at the last look: a bundle is judged once it reads the same twice in a row (copied whole). */
  let previous = loaded;
  /** The digest of a bundle said to be wrong: said once. */
  let refused: string | undefined;
  let done = false;
  const look = () => {
    if (done) return;
    const current = digestOf(options.files);
    const settled = current !== undefined && current === previous;
    previous = current;
    if (!settled || current === loaded || current === refused) return;
    const problem = bundleProblem(options.files, options.node, loadedCaPem, now);
    if (problem) {
      refused = current;
      options.log.error({ bundle: options.files.cert }, `the node's bundle changed on disk, but this node cannot start with it: ${problem}; it runs on with the bundle it loaded`);
      return;
    }
    done = true;
    clearInterval(timer);
    const cert = new X509Certificate(readFileSync(options.files.cert));
    options.onReplaced(cert.fingerprint256 === loadedCert.fingerprint256 ? "its credentials or pre-shared key" : `certificate ${loadedCert.serialNumber} → ${cert.serialNumber}`);
  };
  const timer = setInterval(look, options.intervalMs ?? 2_000);
  timer.unref();
  return {
    stop() {
      done = true;
      clearInterval(timer);
    },
  };
}
