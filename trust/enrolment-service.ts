/**
 * The enrolling hub's service (`leafmesh hub --enrol`): answers `enrol.join` in the enrol account,
 * in batches, with bounded waiting and per-token failure limits (trust/enrolment.ts has what one
 * request does). Requests that arrive while a batch is enrolled form the next batch: each is
 * checked and issued on its own, and the accounts they changed go to the hubs once for the batch.
 * A join re-signs every account of the mesh (claims.ts), and the hub applies each pushed account
 * with all its imports: pushed once per request, a fleet joining at once queued past its timeout.
 */
import { readFileSync } from "node:fs";
import { connect, type ConnectionOptions, type Msg } from "@nats-io/transport-node";
import { enrolSubject } from "../bus/subjects.ts";
import { describeError } from "../lib/errors.ts";
import { batchQueue } from "../lib/batch-queue.ts";
import type { Logger } from "../lib/log.ts";
import { claimsSignedHere } from "./jwt-claims.ts";
import { credsFileAuthenticator } from "./native-authenticator.ts";
import { enrolNode, enrolServiceCreds, type EnrolRefusalCode, type EnrolReply } from "./enrolment.ts";

/** A request issued in the keys directory, waiting for its batch's push before it is answered. */
interface Issued {
  message: Msg;
  reply: EnrolReply & { ok: true };
  changedAccounts: string[];
}

export interface EnrolmentService {
  /** Requests handled, by outcome ("issued" or a refusal code): every refusal counted with its reason. */
  readonly counts: Readonly<Record<string, number>>;
  stop(): Promise<void>;
}

/**
 * @default 16 — requests waiting for the one enrolment in progress; more are refused at once as
 * "busy" (the node retries): a flood costs the hub a bounded queue, not its memory.
 */
export const maxWaitingRequests = 16;
/** @default 10 failed proofs of one token id per minute; then its requests are refused unread for the rest of that minute. */
export const maxFailuresPerMinute = 10;

/**
 * Answers `enrol.join` in the enrol account (its own loopback connection as the enrol service user), one request at a time
 * (each writes the keys directory and may re-sign every account), pushing changed accounts to the
 * hubs before answering so that the node's leaf can connect at once.
 */
export async function startEnrolmentService(options: {
  /** This hub's client URL (loopback: the service user may connect from there only). */
  servers: string[];
  /** TLS of the hub's own clients (its certificate as client certificate). */
  tls: ConnectionOptions["tls"];
  dir: string;
  push: (jwts: string[]) => Promise<void>;
  onIssued?: () => void;
  log: Logger;
  now?: () => number;
  /** How long the certificates of joining nodes last, in days (hub --node-cert-validity). @default 825 */
  certificateDays?: number;
}): Promise<EnrolmentService> {
  const connection = await connect({
    servers: options.servers,
    tls: options.tls,
    authenticator: credsFileAuthenticator(readFileSync(enrolServiceCreds(options.dir)), enrolServiceCreds(options.dir)),
    name: "leafmesh enrolment",
    reconnect: true,
    maxReconnectAttempts: -1,
  });
  const { log } = options;
  const now = options.now ?? Date.now;
  const counts: Record<string, number> = {};
  const failures = new Map<string, { since: number; count: number }>();
  const loggedReasons = new Set<string>();
  const count = (outcome: string) => (counts[outcome] = (counts[outcome] ?? 0) + 1);
  const refuse = (message: Msg, code: EnrolRefusalCode, reason: string, hubTime?: number) => {
    count(code);
    const key = `${code} ${reason}`;
    // Once per reason: a flood of the same refusal is a counter, not a log.
    if (!loggedReasons.has(key) && loggedReasons.size < 1_000) {
      loggedReasons.add(key);
      log.warn({ code }, `enrolment refused: ${reason}`);
    }
    respond(message, { ok: false, code, reason, ...(hubTime !== undefined ? { hubTime } : {}) });
  };
  /** Requests already answered: a failed batch answers the others. */
  const answered = new WeakSet<Msg>();
  const respond = (message: Msg, reply: EnrolReply) => {
    answered.add(message);
    try {
      message.respond(JSON.stringify(reply));
    } catch (error) {
      log.debug({ err: describeError(error) }, "enrolment reply not sent");
    }
  };
  /** Checks and issues one request; refusals are answered at once, an issued node waits for its batch's push. */
  const handle = async (message: Msg): Promise<Issued | undefined> => {
    let body: unknown;
    try {
      body = message.json();
    } catch {
      refuse(message, "malformed", "the request is not JSON");
      return undefined;
    }
    const tokenId = typeof (body as { token?: unknown })?.token === "string" ? String((body as { token: string }).token).slice(0, 64) : "";
    const failed = failures.get(tokenId);
    if (failed && now() - failed.since < 60_000 && failed.count >= maxFailuresPerMinute) {
      refuse(message, "too-many-failures", `token ${tokenId}: ${failed.count} failed attempts in the last minute; try again later`);
      return undefined;
    }
    let result;
    try {
      result = await enrolNode(options.dir, body, now, options.certificateDays);
    } catch (error) {
      log.error({ err: describeError(error) }, "enrolment failed");
      refuse(message, "internal", `the hub could not enrol the node: ${describeError(error)}`);
      return undefined;
    }
    if (!result.reply.ok) {
      if (["wrong-secret", "unknown-token", "bad-signature"].includes(result.reply.code)) {
        const entry = failures.get(tokenId);
        if (!entry || now() - entry.since >= 60_000) failures.set(tokenId, { since: now(), count: 1 });
        else entry.count++;
        if (failures.size > 10_000) failures.clear();
      }
      refuse(message, result.reply.code, result.reply.reason, result.reply.hubTime);
      return undefined;
    }
    return { message, reply: result.reply, changedAccounts: result.changedAccounts };
  };
  /** Enrols a batch: every request on its own, then the accounts they changed pushed once, then the answers. */
  const handleBatch = async (messages: Msg[]) => {
    const issued: Issued[] = [];
    for (const message of messages) {
      const done = await handle(message).catch((error: unknown) => void refuse(message, "internal", `the hub could not enrol the node: ${describeError(error)}`));
      if (done) issued.push(done);
    }
    if (issued.length === 0) return;
    // Each issue re-signs every account: the last JWT of each account holds all of the batch. A hub that meets an
    // import from an account it does not know yet spends ~2 s per import looking it up (nats-server: "fetching jwt
    // timed out"), so each new account goes first as it was signed at its creation (importing only accounts the
    // hub knows, and the batch's earlier ones, pushed before it), and then every account's last JWT.
    const created: string[] = [];
    const latest = new Map<string, string>();
    for (const { changedAccounts } of issued) {
      if (changedAccounts.length > 0) created.push(changedAccounts[0]);
      // Read, not checked: the hub has just signed them (trust/jwt-claims.ts). Not kept: only each account's last one
      // is pushed (and kept by the push), and the others would push out what the hubs hold from the last batch.
      for (const jwt of changedAccounts) latest.set(claimsSignedHere(jwt, { keep: false }).sub, jwt);
    }
    const ordered = [...new Set([...created, ...latest.values()])];
    if (ordered.length > 0) {
      try {
        await options.push(ordered);
      } catch (error) {
        // Issued in the keys directory, not yet known to the running hubs: the nodes ask again (same key: the same identity).
        for (const { message, reply } of issued) refuse(message, "not-pushed", `node '${reply.node}' is issued but the hubs did not take its account yet (${describeError(error)}): ask again`);
        return;
      }
    }
    if (issued.length > 1) log.info({ nodes: issued.length, accounts: ordered.length }, "enrolled a batch of nodes with one push of their accounts");
    for (const { message, reply } of issued) {
      count("issued");
      log.info({ node: reply.node, token: reply.token }, `node '${reply.node}' enrolled with token ${reply.token}`);
      respond(message, reply);
      options.onIssued?.();
    }
  };
  // A batch that fails past handle() (a decode, a log, onIssued) leaves requests unanswered: each is told to ask
  // again (an issued one gets the same identity again), and the queue goes on with what waited behind the batch.
  const queue = batchQueue(handleBatch, (batch, error) => {
    log.error({ err: describeError(error) }, "enrolment batch failed");
    for (const message of batch) {
      if (!answered.has(message)) refuse(message, "interrupted", `the hub failed while enrolling this request (${describeError(error)}): ask again`);
    }
  });
  const subscription = connection.subscribe(enrolSubject, {
    queue: "leafmesh-enrol",
    callback: (error, message) => {
      if (error) {
        log.warn({ err: describeError(error) }, "enrolment subscription failed");
        return;
      }
      if (queue.waiting >= maxWaitingRequests) {
        refuse(message, "busy", `the hub is enrolling other nodes (${queue.waiting} waiting): retry in a few seconds`);
        return;
      }
      queue.push(message);
    },
  });
  log.info({ subject: enrolSubject }, "serving enrolment by token");
  return {
    counts,
    stop: async () => {
      subscription.unsubscribe();
      await queue.idle();
      await connection.close();
    },
  };
}
