/**
 * Joining the mesh with a token, the node's side (`leafmesh agent --join TOKEN`): the node makes its
 * own NATS user key and TLS key, sends their public halves with the token's proof to a hub that
 * serves enrolment (trust/enrolment.ts), and writes the bundle it gets back where `--keys` would
 * point (node.creds, node.crt, node.key, ca.crt, swarm.key). Its private keys never leave it.
 *
 * Once joined, the bundle is used as it is at every start (the token is not asked again): a node
 * that restarts after its token expired or was used up keeps running. A reply lost on the way is
 * asked again with the same keys, which the hub answers with the same identity.
 *
 * ```ts
 * const joined = await joinMesh({ token, node: "edge-a", bundleDir: join(dataDir, "keys"), log });
 * const security = loadNodeSecurity(joined.bundleDir, "edge-a");
 * ```
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { createUser, decode, fmtCreds, fromSeed, type User } from "@nats-io/jwt";
import { enrolSubject } from "../bus/subjects.ts";
import { LeafmeshError, describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { closeSocketsOnAbort } from "../lib/sockets-on-abort.ts";
import { checkSecretFilePermissions, makePrivateDir, writeFileWhole, writeSecretFile } from "./secret-files.ts";
import { credsProblem } from "./bundle-files.ts";
import { makeCertificateRequest } from "./tls.ts";
import { userJwtAuthenticator } from "./native-authenticator.ts";
import { decodeJoinToken } from "./tokens.ts";
import { askAgainCodes, enrolSigningText, type EnrolReply } from "./enrolment.ts";
import { enrolInboxPrefix } from "./enrolment-claims.ts";

export interface JoinResult {
  bundleDir: string;
  /** False when the bundle was there already (an earlier join): nothing was asked. */
  joinedNow: boolean;
  /** What the token gave the node (joined.json). */
  site?: string;
  tags: string[];
  token?: string;
}

/** @default 30 s — an enrolment re-signs every account of the mesh and pushes them to the hubs. */
const defaultTimeoutMs = 30_000;
/** @default 3 min — how long a node asks again while no hub answers, serves enrolment yet, or has time for it. */
const defaultRetryForMs = 180_000;

/**
 * An answer that asking again with the same request may change: the hub was not reached yet, was busy, answered
 * late, or served no enrolment yet (a hub starting). `attempts` bounds the ones that are more likely final.
 */
class AskAgain extends LeafmeshError {
  readonly attempts: number;
  constructor(code: "NATS_UNREACHABLE" | "TRUST_FAILED", message: string, cause: unknown, attempts = Infinity) {
    super(code, message, { cause });
    this.attempts = attempts;
  }
}

const joinedFile = (dir: string) => join(dir, "joined.json");

/**
 * What a refused or failed connection with the token's credentials means, said before the server's text, and how
 * many times it is asked in all (1: it cannot change, said at once). A refused login is asked five times (~15 s):
 * while the joins before it push their accounts, the hub refuses the enrol account's users for seconds (three
 * tries over 3 s were refused in a full run); an enrol account the hub does not know is refused every time.
 */
const refusals: { pattern: RegExp; why: string; attempts: number }[] = [
  { pattern: /expired/i, why: "the token expired (its credentials did, by the hub's clock)", attempts: 1 },
  // nats-server 2.9.10 says "User Authentication Expired" only within the second its user's JWT expires in (it
  // connects, then expires); past that second an expired user gets "Authorization Violation" like any refused one.
  { pattern: /authorization violation/i, why: "the hub refused the token's credentials (the token was revoked, is of another mesh, its enrol account is unknown to that hub, or it expired by the hub's clock; the hub's log says which)", attempts: 5 },
  { pattern: /authentication timeout/i, why: "the hub timed out the login before it was done (a slow TLS handshake, or a busy machine at either end): try again", attempts: Infinity },
  // A TLS alert from the hub is about the certificate this node presented (the token's), not the hub's own.
  { pattern: /alert (bad certificate|certificate expired|unknown ca|certificate unknown)/i, why: "the hub refused the token's client certificate (ended by the hub's clock, or not of the enrolment CA that hub trusts: a token of another mesh, or a hub started before enrolment was set up)", attempts: 1 },
  { pattern: /certificate|self.signed|unable to verify/i, why: "the hub's certificate is not of the token's mesh CA, or does not name the host dialled", attempts: 1 },
];

/** A connection refused or lost, as an error: asked again (AskAgain) unless it cannot change. */
function refusedConnection(what: string, text: string, cause: unknown): LeafmeshError {
  const { why, attempts } = refusals.find((refusal) => refusal.pattern.test(text)) ?? { why: "no hub answered there", attempts: Infinity };
  const message = `${what}: ${why}: ${text}`;
  return attempts === 1 ? new LeafmeshError("NATS_UNREACHABLE", message, { cause }) : new AskAgain("NATS_UNREACHABLE", message, cause, attempts);
}

export async function joinMesh(options: {
  token: string;
  node: string;
  bundleDir: string;
  urls?: string[];
  log: Logger;
  /** One request's timeout. @default 30 s */
  timeoutMs?: number;
  /** How long to ask again while no hub answers, serves enrolment yet, or has time for it. @default 3 min */
  retryForMs?: number;
  now?: () => number;
  /** A stop asked meanwhile (Ctrl-C): the join ends at once with INTERRUPTED, its request's keys kept for the next start. */
  signal?: AbortSignal;
}): Promise<JoinResult> {
  const { node, bundleDir, log } = options;
  const credsFile = join(bundleDir, "node.creds");
  if (existsSync(credsFile)) {
    // The identity the node joined with: a damaged file is said as such (it cannot be made again from the token).
    const damaged = (file: string, what: string) =>
      new LeafmeshError(
        "TRUST_FAILED",
        `${file} of node '${node}' is damaged (${what}): this node's identity cannot be read. Restore ${bundleDir} from a backup, or revoke the node (\`leafmesh keys revoke --node ${node}\`), remove ${bundleDir} and join again`,
      );
    const credsText = readFileSync(credsFile, "utf8");
    const problem = credsProblem(credsText);
    if (problem) throw damaged(credsFile, problem);
    const claims = decode<User>(/-----BEGIN NATS USER JWT-----\s*(\S+)\s*------END NATS USER JWT------/.exec(credsText)![1]);
    if (claims.name !== node) throw new LeafmeshError("CONFIG_INVALID", `${bundleDir} holds the identity of node '${claims.name}', not '${node}': give each node its own --data`);
    let joined: { site?: string; tags?: string[]; token?: string } = {};
    if (existsSync(joinedFile(bundleDir))) {
      try {
        joined = JSON.parse(readFileSync(joinedFile(bundleDir), "utf8")) as typeof joined;
      } catch (error) {
        throw damaged(joinedFile(bundleDir), `not JSON: ${(error as Error).message}`);
      }
    }
    return { bundleDir, joinedNow: false, site: joined.site, tags: joined.tags ?? [], token: joined.token };
  }
  const token = decodeJoinToken(options.token);
  const now = options.now ?? Date.now;
  const tokenUser = decode<User>(token.jwt);
  if (tokenUser.exp && tokenUser.exp * 1000 <= now()) {
    throw new LeafmeshError(
      "TRUST_FAILED",
      `token ${token.id} expired at ${new Date(tokenUser.exp * 1000).toISOString()} by this machine's clock, which reads ${new Date(now()).toISOString()}: make a new one with 'leafmesh keys token' (or, if this clock is wrong, set it and start again)`,
    );
  }
  // The enrolment client certificate the token carries: ended, the hubs' client port refuses the handshake, which the
  // node would otherwise hear as "bad certificate" and take for the hub's. Tokens made by a leafmesh that never
  // issued it again carry one ending 825 days after enrolment was set up.
  const clientCertEnds = Date.parse(new X509Certificate(token.cert).validTo);
  if (clientCertEnds <= now()) {
    throw new LeafmeshError(
      "TRUST_FAILED",
      `token ${token.id} carries an enrolment client certificate that ended at ${new Date(clientCertEnds).toISOString()} by this machine's clock, which reads ${new Date(now()).toISOString()}: the hubs refuse it. Make a new token with 'leafmesh keys token' (it issues a new certificate when the old one ends)`,
    );
  }
  makePrivateDir(bundleDir);
  // The keys are made once and kept until the answer comes: asking again after a lost answer uses the same ones.
  const pendingSeed = join(bundleDir, "join.nk");
  if (!existsSync(pendingSeed)) writeSecretFile(pendingSeed, new TextDecoder().decode(createUser().getSeed()));
  checkSecretFilePermissions(pendingSeed);
  const user = fromSeed(new TextEncoder().encode(readFileSync(pendingSeed, "utf8").trim()));
  const keyFile = join(bundleDir, "node.key");
  const csr = await makeCertificateRequest({ keyFile, commonName: node, keepKey: true });
  /** The request, signed now by this machine's clock moved by `offsetMs` (the hub's clock less this one's, once known). */
  const signedRequest = (offsetMs: number) => {
    const unsigned = { token: token.id, secret: token.secret, node, userKey: user.getPublicKey(), csr, at: Math.round(now() + offsetMs) };
    return { ...unsigned, signature: Buffer.from(user.sign(enrolSigningText(unsigned))).toString("base64") };
  };
  let request = signedRequest(0);
  let clockFixed = false;

  const urls = options.urls && options.urls.length > 0 ? options.urls : token.urls;
  const timeout = options.timeoutMs ?? defaultTimeoutMs;
  const askOnce = async (): Promise<EnrolReply> => {
    let connection: NatsConnection;
    try {
      connection = await connect({
        servers: urls,
        authenticator: userJwtAuthenticator(token.jwt, token.seed),
        tls: { ca: token.ca, cert: token.cert, key: token.key },
        timeout: 10_000,
        reconnect: false,
        // The token's user may listen only under its token's inbox (claims.ts enrolUserJwt).
        inboxPrefix: enrolInboxPrefix(token.id),
        name: `leafmesh join ${node}`,
      });
    } catch (cause) {
      throw refusedConnection(`cannot join with token ${token.id} at ${urls.join(", ")}`, describeError(cause), cause);
    }
    try {
      log.info({ token: token.id, urls }, `asking the hub to enrol node '${node}'`);
      const message = await connection.request(enrolSubject, JSON.stringify(request), { timeout });
      return message.json<EnrolReply>();
    } catch (cause) {
      // The server may accept the connection and close it right after with the reason (an expired user): say that reason.
      const closedWith = connection.isClosed() ? await connection.closed() : undefined;
      if (closedWith) throw refusedConnection(`cannot join with token ${token.id} at ${urls.join(", ")}`, describeError(closedWith), closedWith);
      const text = describeError(cause);
      // A hub that is starting serves enrolment a moment after it takes connections: "no responders" is asked again too.
      if (/no responders/i.test(text)) throw new AskAgain("TRUST_FAILED", `cannot join with token ${token.id}: no hub there serves enrolment (start one hub with --enrol): ${text}`, cause);
      throw new AskAgain("TRUST_FAILED", `cannot join with token ${token.id}: the hub did not answer within ${timeout} ms: ${text}`, cause);
    } finally {
      await connection.close().catch(() => undefined);
    }
  };
  // A node started before its hub is up, or while it restarts, and a hub enrolling other nodes (a fleet joining at
  // once) that answers "busy" or late: the same request again, with the same keys, is safe (an answer that was lost
  // is the same identity again). Asked again until retryForMs has passed; what cannot change is said at once.
  const retryForMs = options.retryForMs ?? defaultRetryForMs;
  const deadline = performance.now() + retryForMs;
  // Ends a wait (an attempt, or the pause before the next) when the stop comes: the asking goes on for minutes.
  const stopped = new LeafmeshError("INTERRUPTED", `stopped before a hub enrolled node '${node}' with token ${token.id}: the node has not joined; start it again to join (the same request is asked again)`);
  const unlessStopped = <T>(waiting: Promise<T>): Promise<T> => {
    const signal = options.signal;
    if (!signal) return waiting;
    if (signal.aborted) return Promise.reject(stopped);
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(stopped);
      signal.addEventListener("abort", onAbort, { once: true });
      waiting.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    });
  };
  let reply: EnrolReply;
  for (let attempt = 1; ; attempt++) {
    // The attempt itself ends too (its dial, its request): left to its 10 s and 30 s timeouts, it held the process open.
    const outcome = await unlessStopped(closeSocketsOnAbort(options.signal, askOnce).catch((error: unknown) => error as Error));
    const again =
      outcome instanceof AskAgain ? outcome
      : !(outcome instanceof Error) && !outcome.ok && askAgainCodes.has(outcome.code) ? new AskAgain("TRUST_FAILED", `${outcome.reason} (${outcome.code})`, undefined)
      : undefined;
    const waitMs = Math.min(10_000, 1_000 * 2 ** (attempt - 1)) * (0.8 + Math.random() * 0.4);
    if (again && attempt < again.attempts && performance.now() + waitMs < deadline) {
      log.warn({ attempt, retryInMs: Math.round(waitMs) }, `the hub did not enrol node '${node}' yet: ${again.message}; asking again`);
      await unlessStopped(
        new Promise((resolve) => {
          const timer = setTimeout(resolve, waitMs);
          options.signal?.addEventListener("abort", () => clearTimeout(timer), { once: true });
        }),
      );
      continue;
    }
    if (outcome instanceof AskAgain) {
      const over = attempt < outcome.attempts ? ` over ${Math.round(retryForMs / 1000)} s` : "";
      throw new LeafmeshError(outcome.code, `${outcome.message} (asked ${attempt} time${attempt === 1 ? "" : "s"}${over})`, { cause: outcome.cause });
    }
    if (outcome instanceof Error) throw outcome;
    // This machine's clock is wrong (an edge box without an RTC, before NTP has set it): signed again by the hub's
    // clock, once. The hub still judges the time, so a captured request is no more replayable than before.
    if (!outcome.ok && outcome.code === "stale-request" && outcome.hubTime !== undefined && !clockFixed) {
      clockFixed = true;
      const offsetMs = outcome.hubTime - now();
      log.warn(
        { offsetMs: Math.round(offsetMs) },
        `this machine's clock is ${describeOffset(offsetMs)} the hub's: the enrolment request is signed again by the hub's clock. Set this clock (NTP): certificates and tokens are judged by it`,
      );
      request = signedRequest(offsetMs);
      attempt--;
      continue;
    }
    reply = outcome;
    break;
  }
  if (!reply.ok) throw new LeafmeshError("TRUST_FAILED", `the hub refused to enrol node '${node}' with token ${token.id}: ${reply.reason} (${reply.code})`);
  if (reply.node !== node || decode<User>(reply.jwt).sub !== user.getPublicKey()) {
    throw new LeafmeshError("TRUST_FAILED", `the hub's answer is for another node or key (${reply.node}): refused`);
  }
  writeFileWhole(join(bundleDir, "node.crt"), reply.cert);
  writeFileWhole(join(bundleDir, "ca.crt"), reply.ca);
  writeSecretFile(join(bundleDir, "swarm.key"), Buffer.from(reply.swarmKey, "base64"));
  writeFileWhole(joinedFile(bundleDir), `${JSON.stringify({ node, token: reply.token, site: reply.site, tags: reply.tags, at: new Date(now()).toISOString() }, null, 2)}\n`);
  // Last: node.creds is what says "joined" at the next start.
  writeSecretFile(credsFile, fmtCreds(reply.jwt, user));
  rmSync(pendingSeed, { force: true });
  log.info({ token: reply.token, site: reply.site, tags: reply.tags }, `node '${node}' joined the mesh: its identity is in ${bundleDir}`);
  return { bundleDir, joinedNow: true, site: reply.site, tags: reply.tags, token: reply.token };
}

/** "3 min 20 s behind", "2 h 5 min ahead of" (offset: the hub's clock less this machine's). */
function describeOffset(offsetMs: number): string {
  const seconds = Math.round(Math.abs(offsetMs) / 1000);
  const parts = seconds >= 86_400 ? [`${Math.floor(seconds / 86_400)} d`, `${Math.floor((seconds % 86_400) / 3_600)} h`] : seconds >= 3_600 ? [`${Math.floor(seconds / 3_600)} h`, `${Math.floor((seconds % 3_600) / 60)} min`] : [`${Math.floor(seconds / 60)} min`, `${seconds % 60} s`];
  return `${parts.join(" ")} ${offsetMs > 0 ? "behind" : "ahead of"}`;
}
