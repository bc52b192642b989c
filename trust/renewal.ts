/**
 * Certificate renewal, the joined node's side. A node that joined with a token (trust/join.ts) made its
 * own TLS key; nobody can carry it a new bundle. Before its certificate ends it asks the enrolling hub for
 * a new one (trust/renewal-service.ts), with what it has: its leaf link (its NATS credentials), its current
 * certificate and key. The new certificate, for the same key, is checked (the mesh CA's, this node's name,
 * this node's key) and written over `node.crt`; the bundle watch (trust/bundle-watch.ts) then starts the
 * agent again in place with it, as it does for any bundle put in place: about a second.
 *
 * When: at two thirds of the certificate's life, counted from its issue (certificates start a week before
 * it, trust/tls.ts), with jitter of a twentieth of the life either way, so that a fleet enrolled in one hour
 * does not ask in one minute. While no hub answers it asks again with backoff (2 s doubling to a minute,
 * jittered), logging each attempt; a refusal that cannot change (the node was revoked or its identity
 * replaced) is said as an error and ends the renewal. So does being told that the node is revoked (`revoked`: its
 * upstream refused its leaf as revoked, or its certificate is on the revocation list): a revoked node's leaf is shut
 * out, so its request never reaches a hub to be refused, and it used to ask again every minute for as long as it ran.
 *
 * ```ts
 * const renewal = startCertificateRenewal({ connection, node: "edge-a", bundleDir, log });
 * renewal.stop();
 * ```
 */
import { createPrivateKey, sign, X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import type { UpstreamReach, UpstreamState } from "../bus/partition.ts";
import { certificateRenewalSubject } from "../bus/subjects.ts";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { writeFileWhole } from "./secret-files.ts";
import { makeCertificateRequest } from "./tls.ts";
import { finalRenewalRefusals, renewalSigningText, type RenewalReply } from "./renewal-service.ts";
import type { RevokedNotice } from "./revoked-notice.ts";

/** How far back certificates start (trust/tls.ts backdateMs): their issue is this long after their start. */
const certificateBackdateMs = 7 * 24 * 3_600_000;
/** @default 2/3 — the point of a certificate's life at which it is renewed: a third is left for a hub that is away. */
export const renewAtFraction = 2 / 3;
/** @default 1/20 of the life, either way: a fleet enrolled at once spreads its renewals. */
const jitterFraction = 1 / 20;
/** @default 2 s, doubling to 60 s — asked again while no hub answers. */
export const renewalBackoff = { minMs: 2_000, maxMs: 60_000 };
/** @default up to 5 s — once the upstream reaches the cloud again, a pending retry is asked within this (a site's nodes spread over it). */
export const upstreamBackJitterMs = 5_000;
/** @default 10 s — one request's wait for the hub's answer (it signs with openssl: well under a second). */
const requestTimeoutMs = 10_000;
/** setTimeout's longest delay (2^31-1 ms, ~24.8 days): a longer wait is taken in steps. */
const longestTimerMs = 2 ** 31 - 1;

/** When to renew a certificate valid from `validFrom` to `validTo` (ms), with `random` in [0, 1) for the jitter. */
export function renewalTime(validFrom: number, validTo: number, random: number): number {
  const issuedAt = Math.min(validTo, validFrom + certificateBackdateMs);
  const life = Math.max(0, validTo - issuedAt);
  return issuedAt + life * renewAtFraction + life * jitterFraction * (2 * random - 1);
}

/**
 * Why a request got no answer, in the words of what it waits for. Behind an edge site whose uplink is cut, or with
 * the node's own leaf link down (its login refused once it is revoked), the request reaches no hub at all; before,
 * each case was said as "no hub serves certificate renewal (the enrolling hub is down or not reached)".
 */
export function unansweredReason(error: string, reach: UpstreamReach | undefined, site?: string): string {
  // A site passes on only its members' traffic (one leaf remote per member: trust/site-security.ts); a node that joined
  // with a token for the site is not one until the site is issued again with it, and reaches no hub through it.
  if (reach === "cloud" && site) return `no hub answered through site '${site}', which reaches the cloud: the enrolling hub (hub --enrol) is down, or this node is not one of the site's members (a site passes on only its members' traffic: leafmesh keys issue-site --site ${site} --members …, with this node, and the bundle copied to its servers): ${error}`;
  if (reach === "none") return `this node's leaf link is down (its upstream not reached, or refusing its login: the fabric's lines say which), so the request reached no hub: ${error}`;
  if (reach === "site") return `this node's site is cut off from the cloud: the request waits for the site's link to the hubs: ${error}`;
  return /no responders/i.test(error) ? `no hub serves certificate renewal (the enrolling hub, hub --enrol, is down or not reached): ${error}` : `the request got no answer: ${error}`;
}

/**
 * What an ended certificate means for the renewal. A leaf link that holds (a TLS session is checked at its handshake
 * only: behind a site cut off from the cloud, the node's link to its site stays up) still carries the renewal once a
 * hub answers, and the hub renews a current certificate that has ended; only a leaf that must dial again is refused.
 * Before, every ended certificate was said as "join it again with a token", which also took a node that would have
 * renewed by itself once its site's uplink came back.
 */
export function endedNote(reach: UpstreamReach | undefined): string {
  if (reach === "site" || reach === "cloud") return " (it has ended: peers refuse this node's tunnel, and its upstream refuses its leaf if it must dial again; while this leaf link holds, it is renewed as soon as a hub answers)";
  return " (it has ended: the hubs refuse this node's leaf until it is renewed, which needs the leaf: join it again with a token)";
}

export interface CertificateRenewal {
  /** The next time a renewal is due, or undefined when it has ended (refused for good). */
  readonly dueAt: number | undefined;
  stop(): void;
}

/** Runs the renewal of `bundleDir`'s node.crt for `node`, on the agent's own connection (its leaf carries the request). */
export function startCertificateRenewal(options: {
  connection: NatsConnection;
  node: string;
  bundleDir: string;
  log: Logger;
  /**
   * How far the node reaches (its leaf link; under a site, the site's uplink): what an unanswered request waited for,
   * and when it is back, a pending retry is asked at once instead of after its backoff (up to a minute).
   */
  upstream?: Pick<UpstreamState, "reach" | "onChange">;
  /** The edge site the node attaches to (its --upstream-domain), when it does. */
  site?: string;
  /** Told that this node is revoked: the renewal ends, said once with what brings the node back. */
  revoked?: Pick<RevokedNotice, "onRevoked">;
  now?: () => number;
  random?: () => number;
}): CertificateRenewal {
  const { connection, node, bundleDir, log } = options;
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  const certFile = join(bundleDir, "node.crt");
  const keyFile = join(bundleDir, "node.key");
  const caFile = join(bundleDir, "ca.crt");
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  /** Refused for good or revoked: nothing is asked any more (stop() still ends the watches). */
  let ended = false;
  /** The attempt a backoff waits to make, while one does. */
  let pendingRetry: number | undefined;
  const retryAfter = (delay: number, tries: number) => {
    pendingRetry = tries;
    wait(delay, () => attempt(tries));
  };
  const upstreamWatch = options.upstream?.onChange((reach) => {
    if (reach !== "cloud" || pendingRetry === undefined || stopped) return;
    const tries = pendingRetry;
    if (timer) clearTimeout(timer);
    const delay = random() * upstreamBackJitterMs;
    dueAt = now() + delay;
    log.info({ attempt: tries, retryInMs: Math.round(delay) }, `the upstream reaches the cloud again: asking for this node's certificate in ${Math.round(delay / 1000)} s`);
    retryAfter(delay, tries);
  });
  let dueAt: number | undefined;

  const wait = (ms: number, then: () => void) => {
    timer = setTimeout(() => (ms > longestTimerMs ? wait(ms - longestTimerMs, then) : then()), Math.min(ms, longestTimerMs));
    timer.unref?.();
  };

  const askOnce = async (current: string, csr: string): Promise<RenewalReply> => {
    const at = now();
    const signature = sign("sha256", renewalSigningText(node, { csr, at }), createPrivateKey(readFileSync(keyFile))).toString("base64");
    const message = await connection.request(certificateRenewalSubject(node), JSON.stringify({ cert: current, csr, at, signature }), { timeout: requestTimeoutMs });
    return message.json<RenewalReply>();
  };

  /** The new certificate must be the mesh CA's, for this node, for this node's key, and end later than the one it replaces. */
  const checkNew = (pem: string, replaced: X509Certificate): X509Certificate => {
    const next = new X509Certificate(pem);
    if (!next.verify(new X509Certificate(readFileSync(caFile)).publicKey)) throw new Error("the certificate answered is not of this node's mesh CA");
    if (next.subject !== `CN=${node}`) throw new Error(`the certificate answered is for '${next.subject}', not CN=${node}`);
    if (!next.checkPrivateKey(createPrivateKey(readFileSync(keyFile)))) throw new Error("the certificate answered is not for this node's key");
    if (Date.parse(next.validTo) <= Date.parse(replaced.validTo)) throw new Error(`the certificate answered ends ${next.validTo}, no later than the current one`);
    return next;
  };

  const backoffMs = (tries: number) => Math.min(renewalBackoff.maxMs, renewalBackoff.minMs * 2 ** (tries - 1)) * (0.8 + 0.4 * random());

  /** One attempt; anything it did not foresee (the bundle's files unreadable, openssl failing) is said and asked again, never thrown. */
  const attempt = (tries: number): void =>
    void attemptOnce(tries).catch((error: unknown) => {
      if (stopped || ended) return;
      const delay = backoffMs(tries);
      dueAt = now() + delay;
      log.error({ attempt: tries, retryInMs: Math.round(delay), err: describeError(error) }, `this node's certificate was not renewed: ${describeError(error)}; asking again in ${Math.round(delay / 1000)} s`);
      retryAfter(delay, tries + 1);
    });

  const attemptOnce = async (tries: number) => {
    pendingRetry = undefined;
    if (stopped || ended) return;
    const reachAtStart = options.upstream?.reach;
    const pem = readFileSync(certFile, "utf8");
    const current = new X509Certificate(pem);
    log.info({ attempt: tries, ends: current.validTo }, `renewing this node's certificate (it ends ${new Date(current.validTo).toISOString()}): asking the enrolling hub`);
    // Made before asking: a failure here (openssl) is this machine's, said as itself by attempt().
    const csr = await makeCertificateRequest({ keyFile, commonName: node, keepKey: true });
    let reply: RenewalReply | undefined;
    let failure: string | undefined;
    try {
      reply = await askOnce(pem, csr);
    } catch (error) {
      failure = unansweredReason(describeError(error), options.upstream?.reach, options.site);
    }
    if (stopped || ended) return;
    if (reply && !reply.ok && finalRenewalRefusals.has(reply.code)) {
      dueAt = undefined;
      ended = true;
      log.error({ code: reply.code }, `the enrolling hub refused to renew this node's certificate: ${reply.reason}. It ends ${new Date(current.validTo).toISOString()}, and is not asked for again`);
      return;
    }
    if (reply?.ok) {
      try {
        const next = checkNew(reply.cert, current);
        writeFileWhole(certFile, reply.cert);
        log.info({ ends: next.validTo }, `this node's certificate was renewed: the new one ends ${new Date(next.validTo).toISOString()} (written to ${certFile}; the agent takes it by starting again in place)`);
        schedule();
        return;
      } catch (error) {
        failure = `the hub's answer was not taken: ${describeError(error)}`;
      }
    } else if (reply && !reply.ok) {
      failure = `the enrolling hub refused it for now: ${reply.reason} (${reply.code})`;
    }
    // The upstream came back while this attempt was on its way (no retry was pending to bring forward): soon, as then.
    const cameBack = reachAtStart !== undefined && reachAtStart !== "cloud" && options.upstream?.reach === "cloud";
    const delay = cameBack ? random() * upstreamBackJitterMs : backoffMs(tries);
    dueAt = now() + delay;
    const left = Date.parse(current.validTo) - now();
    log.warn({ attempt: tries, retryInMs: Math.round(delay), endsInMs: left }, `this node's certificate was not renewed: ${failure}; asking again in ${Math.round(delay / 1000)} s${left <= 0 ? endedNote(options.upstream?.reach) : ""}`);
    if (cameBack) log.info({ attempt: tries + 1, retryInMs: Math.round(delay) }, `the upstream reaches the cloud again: asking for this node's certificate in ${Math.round(delay / 1000)} s`);
    retryAfter(delay, tries + 1);
  };

  const schedule = () => {
    if (stopped || ended || !existsSync(certFile)) return;
    const current = new X509Certificate(readFileSync(certFile));
    dueAt = renewalTime(Date.parse(current.validFrom), Date.parse(current.validTo), random());
    const inMs = Math.max(0, dueAt - now());
    log.info({ renewAt: new Date(dueAt).toISOString(), ends: current.validTo }, `this node's certificate is renewed at ${new Date(dueAt).toISOString()}, two thirds of its life`);
    wait(inMs, () => attempt(1));
  };

  // Before the first schedule: a notice already given ends the renewal before anything is asked.
  const revokedWatch = options.revoked?.onRevoked((why) => {
    if (stopped || ended) return;
    ended = true;
    pendingRetry = undefined;
    dueAt = undefined;
    if (timer) clearTimeout(timer);
    let ends = "";
    try {
      ends = ` (it ends ${new Date(new X509Certificate(readFileSync(certFile)).validTo).toISOString()})`;
    } catch {
      ends = ""; // unreadable: what is said does not need it
    }
    log.error(
      { revoked: why },
      `this node is revoked: ${why}. Its certificate${ends} is not renewed, and not asked for again. It joined with a token and has no bundle to be given: to bring it back, remove ${bundleDir} and start the agent again with a new join token (leafmesh keys token; it makes new keys, and a revoked name may join again)`,
    );
  });
  schedule();
  return {
    get dueAt() {
      return dueAt;
    },
    stop() {
      stopped = true;
      upstreamWatch?.();
      revokedWatch?.();
      if (timer) clearTimeout(timer);
    },
  };
}
