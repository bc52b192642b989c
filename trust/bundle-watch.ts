/**
 * A node's bundle replaced on disk while the node runs: `keys issue --rotate` writes a new one (in place when the
 * agent runs from the keys directory; otherwise the operator copies it over the old), and the running node holds
 * the old one, which the rotation revoked: every peer refuses its tunnel and the hub its login. The node notices
 * (its files read every few seconds), checks that the new bundle is whole and is this node's of the same mesh,
 * and then calls `onReplaced`, where the agent stops and starts again in place with it (cli/agent.ts). A bundle
 * still being copied (files from two issues, a key that is not the certificate's) is waited for; one that stays
 * wrong is said once, and the node runs on with what it loaded.
 *
 * A hub does the same with its TLS certificate and key (`keys hub-cert`: trust/hub-certificate.ts), and a site
 * server with its site bundle (`keys issue-site` again: a member added, the site's certificate renewed).
 *
 * Both say, once a day, when the certificate they run with ends within 30 days (an agent also when its NATS
 * credentials do, issued with --expires): at its end every peer refuses it.
 *
 * ```ts
 * const watch = watchBundle({ files: security.files, node: "edge-a", log, onReplaced: (why) => restart(why) });
 * node.onStop(() => watch.stop());
 * ```
 */
import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { readCredsClaims } from "./denials.ts";
import { clockBeforeStart, dayMs, endPhrase, endsSoonMs, loadedEnds, type Ending } from "./ends.ts";
import { checkSecretFilePermissions } from "./secret-files.ts";
import type { NodeSecurity } from "./security.ts";
import { siteClaimsCredsFile } from "./site-claims.ts";

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

/** The files as read now: their digest, or undefined when one cannot be read (being replaced). */
function digestOf(paths: readonly string[]): string | undefined {
  const hash = createHash("sha256");
  try {
    for (const path of paths) hash.update(readFileSync(path)).update("\0");
  } catch {
    return undefined;
  }
  return hash.digest("hex");
}


/**
 * Why a certificate and key (and the CA beside them) cannot be run with, or undefined when they can: the CA the
 * process runs with (`loadedCaPem`), a certificate it signed, the key its own, not ended. Throws when one is unreadable.
 */
function tlsFilesProblem(files: { cert: string; key: string; ca: string }, loadedCaPem: string, who: string, now: () => number): { problem: string } | { cert: X509Certificate } {
  checkSecretFilePermissions(files.key);
  const cert = new X509Certificate(readFileSync(files.cert));
  const ca = new X509Certificate(readFileSync(files.ca));
  if (ca.fingerprint256 !== new X509Certificate(loadedCaPem).fingerprint256) return { problem: `${files.ca} is another CA than the one this ${who} runs with (keys of another mesh?)` };
  if (!cert.verify(ca.publicKey)) return { problem: `${files.cert} is not signed by the mesh CA in ${files.ca}` };
  if (!cert.checkPrivateKey(createPrivateKey(readFileSync(files.key)))) return { problem: `${files.key} is not the key of ${files.cert} (files of two issues?)` };
  if (Date.parse(cert.validTo) <= now()) return { problem: `${files.cert} expired at ${new Date(cert.validTo).toISOString()}` };
  return { cert };
}

/** Why the bundle on disk cannot be started with, or undefined when it can. `loadedCa`: the CA the node runs with. */
export function bundleProblem(files: BundleWatchOptions["files"], node: string, loadedCaPem: string, now: () => number = Date.now): string | undefined {
  try {
    for (const secret of [files.creds, files.psk]) checkSecretFilePermissions(secret);
    const tls = tlsFilesProblem(files, loadedCaPem, "node", now);
    if ("problem" in tls) return tls.problem;
    const commonName = /(?:^|\n)CN=([^\n]+)/.exec(tls.cert.subject)?.[1];
    if (commonName !== node) return `${files.cert} is node '${commonName ?? "?"}''s certificate, not '${node}''s`;
    const claims = readCredsClaims(files.creds);
    if (!claims) return `${files.creds} does not hold a NATS user JWT`;
    if (claims.name !== node) return `${files.creds} holds node '${claims.name}''s credentials, not '${node}''s`;
    if (claims.exp && claims.exp * 1000 <= now()) return `the credentials in ${files.creds} expired at ${new Date(claims.exp * 1000).toISOString()}`;
    return undefined;
  } catch (error) {
    return describeError(error);
  }
}

/**
 * Follows `paths`; once they changed and read the same twice in a row, `problem()` judges them: undefined takes them
 * (`onReplaced`, once), a reason is said once (as `what`) and they are not taken. Also says, at start and once a day,
 * when something loaded (`certFile`'s certificate, and `credsFile`'s credentials when they have an expiry) ends within 30 days,
 * with `renew`.
 */
function watchReplacedFiles(options: {
  paths: readonly string[];
  what: string;
  certFile: string;
  /** The credentials the process loaded, when their end is to be said too. */
  credsFile?: string;
  renew: string;
  problem: () => string | undefined;
  onReplaced: (what: string) => void;
  log: Logger;
  intervalMs?: number;
  now: () => number;
}): { stop(): void } {
  const loaded = digestOf(options.paths);
  const loadedCert = new X509Certificate(readFileSync(options.certFile));
  const ending: Ending[] = loadedEnds({ cert: options.certFile, creds: options.credsFile });
  let previous = loaded;
  /** The digest of files said to be wrong: said once. */
  let refused: string | undefined;
  let done = false;
  let endSaidAt = -Infinity;
  const sayEnd = () => {
    if (options.now() - endSaidAt < dayMs) return;
    const clock = clockBeforeStart(ending, options.now());
    if (clock) {
      endSaidAt = options.now();
      options.log.error({ file: options.certFile }, `${options.what}: ${clock}`);
    }
    for (const end of ending) {
      if (end.at - options.now() > endsSoonMs) continue;
      endSaidAt = options.now();
      const one = end.what === "certificate";
      options.log.warn({ file: end.file, notAfter: new Date(end.at).toISOString() }, `${options.what}'s ${endPhrase(end, options.now())}: ${one ? "peers refuse it" : "the hubs refuse them"} from then on. ${options.renew}`);
    }
  };
  sayEnd();
  const look = () => {
    if (done) return;
    sayEnd();
    const current = digestOf(options.paths);
    const settled = current !== undefined && current === previous;
    previous = current;
    if (!settled || current === loaded || current === refused) return;
    const problem = options.problem();
    if (problem) {
      refused = current;
      options.log.error({ certificate: options.certFile }, `${options.what}'s files changed on disk, but it cannot start with them: ${problem}; it runs on with those it loaded`);
      return;
    }
    done = true;
    clearInterval(timer);
    const cert = new X509Certificate(readFileSync(options.certFile));
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

/**
 * What to do about a node's certificate that ends soon. A node that joined with a token (joined.json beside its
 * creds) has no bundle anyone can issue again: it renews its certificate itself (trust/renewal.ts), so one that
 * ends within 30 days means its renewal has not got through; before, it was told to issue its bundle again.
 */
function renewAdvice(files: { creds: string }, node: string): string {
  const bundle = dirname(files.creds);
  if (!existsSync(join(bundle, "joined.json"))) return `Issue its bundle again (leafmesh keys issue --node ${node} --rotate) and put it where the old one is: the node starts again with it.`;
  return `It joined with a token and renews its certificate itself, through its leaf link, from two thirds of its life: its renewal lines in this log say why it has not (the enrolling hub, hub --enrol, away or not reached). Once it has ended the hubs refuse it: revoke it (leafmesh keys revoke --node ${node} --hub …), remove ${bundle} and start it again with a join token.`;
}

export function watchBundle(options: BundleWatchOptions): { stop(): void } {
  const now = options.now ?? Date.now;
  const { files, node } = options;
  const loadedCaPem = readFileSync(files.ca, "utf8");
  return watchReplacedFiles({
    paths: [files.creds, files.cert, files.key, files.ca, files.psk],
    what: `node ${node}`,
    certFile: files.cert,
    credsFile: files.creds,
    renew: renewAdvice(files, node),
    problem: () => bundleProblem(files, node, loadedCaPem, now),
    onReplaced: options.onReplaced,
    log: options.log,
    intervalMs: options.intervalMs,
    now,
  });
}

/** Why a hub cannot start with the TLS files under its keys' hub/, or undefined when it can. */
export function hubCertificateProblem(files: { cert: string; key: string; ca: string }, loadedCaPem: string, now: () => number = Date.now): string | undefined {
  try {
    const tls = tlsFilesProblem(files, loadedCaPem, "hub", now);
    return "problem" in tls ? tls.problem : undefined;
  } catch (error) {
    return describeError(error);
  }
}

/** A hub's TLS certificate and key replaced on disk (`keys hub-cert`, copied to the hub): as `watchBundle`. */
export function watchHubCertificate(options: { files: { cert: string; key: string; ca: string }; name: string; log: Logger; onReplaced: (what: string) => void; intervalMs?: number; now?: () => number }): { stop(): void } {
  const now = options.now ?? Date.now;
  const loadedCaPem = readFileSync(options.files.ca, "utf8");
  return watchReplacedFiles({
    paths: [options.files.cert, options.files.key, options.files.ca],
    what: `hub ${options.name}`,
    certFile: options.files.cert,
    renew: "Issue the hubs' certificate again (leafmesh keys hub-cert) and copy DIR/hub/ to each hub: each starts again with it.",
    problem: () => hubCertificateProblem(options.files, loadedCaPem, now),
    onReplaced: options.onReplaced,
    log: options.log,
    intervalMs: options.intervalMs,
    now,
  });
}

/** Why a site server cannot start with the site bundle on disk, or undefined when it can. */
export function siteBundleProblem(bundle: string, options: { site: string; server: string }, loadedCaPem: string, now: () => number = Date.now): string | undefined {
  try {
    const tls = tlsFilesProblem({ cert: join(bundle, "site.crt"), key: join(bundle, "site.key"), ca: join(bundle, "ca.crt") }, loadedCaPem, "site server", now);
    if ("problem" in tls) return tls.problem;
    const description = JSON.parse(readFileSync(join(bundle, "site.json"), "utf8")) as { site?: string; servers?: string[]; members?: Record<string, string> };
    if (description.site !== options.site) return `the bundle is site '${description.site}''s, not '${options.site}''s`;
    if (!description.servers?.includes(options.server)) return `server '${options.server}' is not one of the bundle's servers (${description.servers?.join(", ")})`;
    for (const creds of siteCredentials(bundle, options.server, Object.keys(description.members ?? {}))) {
      checkSecretFilePermissions(creds);
      if (!readCredsClaims(creds)) return `${creds} does not hold a NATS user JWT`;
    }
    return undefined;
  } catch (error) {
    return describeError(error);
  }
}

function siteCredentials(bundle: string, server: string, members: string[]): string[] {
  // The account updates' user (trust/site-claims.ts); a bundle an older leafmesh made holds sys.creds instead.
  const claims = existsSync(join(bundle, siteClaimsCredsFile)) ? siteClaimsCredsFile : "sys.creds";
  return [join(bundle, "local.creds"), join(bundle, claims), join(bundle, "servers", `${server}.creds`), ...members.map((member) => join(bundle, "members", `${member}.creds`))];
}

/** A site server's bundle replaced on disk (`keys issue-site` again, copied to the site): as `watchBundle`. */
export function watchSiteBundle(options: { bundle: string; site: string; server: string; log: Logger; onReplaced: (what: string) => void; intervalMs?: number; now?: () => number }): { stop(): void } {
  const now = options.now ?? Date.now;
  const { bundle } = options;
  const cert = join(bundle, "site.crt");
  const loadedCaPem = readFileSync(join(bundle, "ca.crt"), "utf8");
  const members = Object.keys((JSON.parse(readFileSync(join(bundle, "site.json"), "utf8")) as { members?: Record<string, string> }).members ?? {});
  return watchReplacedFiles({
    // site.json names the members: one added changes it, and the server then starts again with a remote for it.
    paths: [cert, join(bundle, "site.key"), join(bundle, "ca.crt"), join(bundle, "site.json"), ...siteCredentials(bundle, options.server, members)],
    what: `site server ${options.server}`,
    certFile: cert,
    renew: `Issue the site's bundle again (leafmesh keys issue-site --site ${options.site} …) and copy it to each of its servers: each starts again with it.`,
    problem: () => siteBundleProblem(bundle, options, loadedCaPem, now),
    onReplaced: options.onReplaced,
    log: options.log,
    intervalMs: options.intervalMs,
    now,
  });
}
