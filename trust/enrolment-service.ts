/**
 * The enrolling hub's service (`leafmesh hub --enrol`): answers `enrol.join` in the enrol account,
 * one request at a time, with bounded waiting and per-token failure limits (trust/enrolment.ts has
 * what one request does).
 */
import { readFileSync } from "node:fs";
import { connect, credsAuthenticator, type ConnectionOptions, type Msg } from "@nats-io/transport-node";
import { enrolSubject } from "../bus/subjects.ts";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { enrolNode, enrolServiceCreds, type EnrolRefusalCode, type EnrolReply } from "./enrolment.ts";

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
}): Promise<EnrolmentService> {
  const connection = await connect({
    servers: options.servers,
    tls: options.tls,
    authenticator: credsAuthenticator(new Uint8Array(readFileSync(enrolServiceCreds(options.dir)))),
    name: "leafmesh enrolment",
    reconnect: true,
    maxReconnectAttempts: -1,
  });
  const { log } = options;
  const now = options.now ?? Date.now;
  const counts: Record<string, number> = {};
  const failures = new Map<string, { since: number; count: number }>();
  const loggedReasons = new Set<string>();
  let waiting = 0;
  let chain: Promise<void> = Promise.resolve();
  const count = (outcome: string) => (counts[outcome] = (counts[outcome] ?? 0) + 1);
  const refuse = (message: Msg, code: EnrolRefusalCode, reason: string) => {
    count(code);
    const key = `${code} ${reason}`;
    // Once per reason: a flood of the same refusal is a counter, not a log.
    if (!loggedReasons.has(key) && loggedReasons.size < 1_000) {
      loggedReasons.add(key);
      log.warn({ code }, `enrolment refused: ${reason}`);
    }
    respond(message, { ok: false, code, reason });
  };
  const respond = (message: Msg, reply: EnrolReply) => {
    try {
      message.respond(JSON.stringify(reply));
    } catch (error) {
      log.debug({ err: describeError(error) }, "enrolment reply not sent");
    }
  };
  const handle = async (message: Msg) => {
    let body: unknown;
    try {
      body = message.json();
    } catch {
      refuse(message, "malformed", "the request is not JSON");
      return;
    }
    const tokenId = typeof (body as { token?: unknown })?.token === "string" ? String((body as { token: string }).token).slice(0, 64) : "";
    const failed = failures.get(tokenId);
    if (failed && now() - failed.since < 60_000 && failed.count >= maxFailuresPerMinute) {
      refuse(message, "too-many-failures", `token ${tokenId}: ${failed.count} failed attempts in the last minute; try again later`);
      return;
    }
    let result;
    try {
      result = await enrolNode(options.dir, body, now);
    } catch (error) {
      log.error({ err: describeError(error) }, "enrolment failed");
      refuse(message, "internal", `the hub could not enrol the node: ${describeError(error)}`);
      return;
    }
    if (!result.reply.ok) {
      if (["wrong-secret", "unknown-token", "bad-signature"].includes(result.reply.code)) {
        const entry = failures.get(tokenId);
        if (!entry || now() - entry.since >= 60_000) failures.set(tokenId, { since: now(), count: 1 });
        else entry.count++;
        if (failures.size > 10_000) failures.clear();
      }
      refuse(message, result.reply.code, result.reply.reason);
      return;
    }
    // The accounts first, so that the node's leaf is accepted at its first attempt.
    if (result.changedAccounts.length > 0) {
      try {
        await options.push(result.changedAccounts);
      } catch (error) {
        // Issued in the keys directory, not yet known to the running hubs: the node asks again (same key: the same identity).
        refuse(message, "internal", `node '${result.reply.node}' is issued but the hubs did not take its account yet (${describeError(error)}): ask again`);
        return;
      }
    }
    count("issued");
    log.info({ node: result.reply.node, token: result.reply.token }, `node '${result.reply.node}' enrolled with token ${result.reply.token}`);
    respond(message, result.reply);
    options.onIssued?.();
  };
  const subscription = connection.subscribe(enrolSubject, {
    queue: "leafmesh-enrol",
    callback: (error, message) => {
      if (error) {
        log.warn({ err: describeError(error) }, "enrolment subscription failed");
        return;
      }
      if (waiting >= maxWaitingRequests) {
        refuse(message, "busy", `the hub is enrolling other nodes (${waiting} waiting): retry in a few seconds`);
        return;
      }
      waiting++;
      chain = chain
        .then(() => handle(message))
        .catch((error: unknown) => refuse(message, "internal", `the hub could not enrol the node: ${describeError(error)}`))
        .finally(() => waiting--);
    },
  });
  log.info({ subject: enrolSubject }, "serving enrolment by token");
  return {
    counts,
    stop: async () => {
      subscription.unsubscribe();
      await chain;
      await connection.close();
    },
  };
}
