/**
 * Turning NATS's quiet refusals into messages that say what happened.
 * docs/nats-facts.md: a client never sees a permission error across a leaf — a denied
 * JetStream call comes back as "jetstream is not enabled", "no responders" or
 * a timeout — and a refused login says only "Authorization Violation". These
 * helpers name the cause (denied subject, expired/revoked/foreign credentials,
 * another CA, plaintext to a TLS port) for the agent's and hub's logs.
 *
 * ```ts
 * try { await kv.put("edge-b", bytes); } catch (error) { throw explainDenial(error, { node: "edge-a", action: "write node record edge-b", subject: "$KV.mesh-nodes.edge-b" }); }
 * watchPermissionErrors(connection, log, "edge-a");  // logs "Publish Violation" answers of the local server
 * classifyServerLogLine("[ERR] ... x509: certificate signed by unknown authority")  // { cause: "foreign-ca", message }
 * ```
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { decode, type User } from "@nats-io/jwt";
import { NoRespondersError, PermissionViolationError, RequestError, TimeoutError, type NatsConnection } from "@nats-io/transport-node";
import { JetStreamApiError } from "@nats-io/jetstream";
import { JetStreamStatusError, jserrors } from "@nats-io/jetstream/internal";
import { LeafmeshError, describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";

/** The errors in a chain of causes (nats.js wraps a request's NoRespondersError in a RequestError, and so on). */
function causes(error: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let current = error, depth = 0; current !== undefined && depth < 6; depth++) {
    chain.push(current);
    current = current instanceof Error ? current.cause : undefined;
  }
  return chain;
}

/**
 * How NATS answered: refused by the node's own server (it sends a permission violation), or
 * quietly, the way a call the hub does not route across a leaf ends (docs/nats-facts.md, "Denials
 * are quiet": no responders, a timeout, JetStream "not enabled" or 503). Judged by nats.js's error
 * classes and JetStream's codes, not by message text.
 */
export function denialKind(error: unknown): "local" | "quiet" | undefined {
  const chain = causes(error) as Error[];
  if (chain.some((cause) => cause instanceof PermissionViolationError)) return "local";
  const quiet = chain.some(
    (cause) =>
      cause instanceof NoRespondersError ||
      cause instanceof TimeoutError ||
      cause instanceof jserrors.JetStreamNotEnabled ||
      (cause instanceof RequestError && cause.isNoResponders()) ||
      (cause instanceof JetStreamApiError && (cause.code === 10039 || cause.status === 503)) ||
      (cause instanceof JetStreamStatusError && cause.code === 503),
  );
  return quiet ? "quiet" : undefined;
}

/** Wraps an error from a JetStream/KV call or request into NATS_DENIED when it has the shape of a denial. */
export function explainDenial(error: unknown, context: { node: string; action: string; subject: string }): LeafmeshError {
  const text = describeError(error);
  const rules = `Nodes publish only mesh.${context.node}.>, write only their own node record, and read the catalog; the hub's publisher writes it`;
  const kind = denialKind(error);
  if (kind === "local") {
    return new LeafmeshError("NATS_DENIED", `node '${context.node}' may not ${context.action} (${context.subject}): refused by its own nats-server ("${text}"). ${rules}`, { cause: error });
  }
  if (kind === "quiet") {
    return new LeafmeshError(
      "NATS_DENIED",
      `node '${context.node}' may not ${context.action} (${context.subject}): the hub gave no route for it ("${text}" is how NATS answers a denied call across a leaf). ${rules}`,
      { cause: error },
    );
  }
  return new LeafmeshError("NATS_UNREACHABLE", `node '${context.node}' could not ${context.action} (${context.subject}): ${text}`, { cause: error });
}

/** Logs every permission error the server sends on `connection` (the agent's local server answers "Permissions Violation"). */
export function watchPermissionErrors(connection: NatsConnection, log: Logger, node: string): void {
  void (async () => {
    for await (const status of connection.status()) {
      if (status.type !== "error" || !(status.error instanceof PermissionViolationError)) continue;
      const error = status.error;
      log.warn({ node, subject: error.subject, operation: error.operation, denied: true }, `denied: node '${node}' may not ${error.operation} ${error.subject} (refused by its own nats-server: not one of its subjects)`);
    }
  })();
}

export type RefusalCause =
  | "foreign-ca"
  | "foreign-node-certificate"
  | "no-client-certificate"
  | "plaintext-to-tls"
  | "tls-handshake"
  | "credentials-refused"
  | "credentials-expired"
  | "credentials-revoked"
  | "clock-behind"
  | "certificate-expired"
  | "host-not-in-certificate"
  | "not-a-leafnode-port"
  | "permission-denied";

export interface Refusal {
  cause: RefusalCause;
  message: string;
}

/**
 * Classifies a nats-server log line (the hub's or the agent's leaf) that reports
 * a refusal; undefined for any other line. The texts are the ones docs/nats-facts.md saw
 * on 2.9.10.
 */
export function classifyServerLogLine(line: string): Refusal | undefined {
  // Go's words for a certificate outside its validity: "current time T is before NOTBEFORE" (or "after NOTAFTER").
  const validity = /not yet valid: current time (\S+) is (before|after) (\S+)/.exec(line);
  if (validity) {
    const [, now, side, bound] = validity;
    return side === "before"
      ? { cause: "clock-behind", message: `TLS refused: by this machine's clock (${now}) a certificate is not valid until ${bound}: this machine's clock is behind (set it, or let NTP reach a time server); the certificates themselves are fine` }
      : { cause: "certificate-expired", message: `TLS refused: a certificate expired at ${bound} (this machine's clock says ${now}): if the clock is right, issue it again (\`leafmesh keys issue --rotate\`, or \`keys init\` for the hubs')` };
  }
  // Go's words for a certificate that does not name the host dialled: the name is missing from --hub-hosts (or --hosts).
  const misnamed = /certificate is valid for (.+), not (\S+)/.exec(line);
  if (misnamed) {
    const [, names, host] = misnamed;
    return {
      cause: "host-not-in-certificate",
      message: `TLS refused: the upstream's certificate names ${names}, not ${host}, the host this server dials: give it by one of those names (--hub, --upstream), or issue the certificate again with ${host} (\`leafmesh keys hub-cert --hub-hosts …,${host}\` for the hubs, \`keys issue-site --hosts\` for a site)`,
    };
  }
  if (/attempted to connect to wrong port/i.test(line)) {
    return {
      cause: "not-a-leafnode-port",
      message: "the upstream URL is not a leafnode port (a hub's client port, 4222, answered): --hub and --upstream take the hubs' (or site servers') --leaf-listen address, 7422 by default",
    };
  }
  if (/failed to verify client certificate/i.test(line)) {
    return { cause: "foreign-node-certificate", message: "TLS refused: the connecting node's certificate is not signed by this mesh's CA (issue it with `leafmesh keys issue`)" };
  }
  if (/certificate signed by unknown authority|unable to verify the first certificate|self[- ]signed certificate/i.test(line)) {
    return { cause: "foreign-ca", message: "TLS refused: the other side's certificate is not signed by this mesh's CA (another mesh's hub, or a wrong ca.crt)" };
  }
  if (/didn't provide a certificate|certificate required/i.test(line)) {
    return { cause: "no-client-certificate", message: "TLS refused: the connecting side presented no client certificate of this mesh's CA" };
  }
  if (/does not look like a TLS handshake/i.test(line)) {
    return { cause: "plaintext-to-tls", message: "TLS refused: a client spoke plaintext to a TLS port (use tls:// and the mesh's certificates)" };
  }
  if (/bad certificate|unknown certificate authority|tls: .*(handshake|alert)|remote error: tls/i.test(line)) {
    return { cause: "tls-handshake", message: "TLS refused during the handshake: a certificate from another CA (or none) on one side" };
  }
  if (/authentication revoked/i.test(line)) {
    return { cause: "credentials-revoked", message: "credentials revoked: this node's user key was revoked (keys revoke, or replaced by keys issue --rotate): start it with its new bundle" };
  }
  if (/authorization violation|authentication (error|failure)/i.test(line)) {
    const expired = /expired/i.test(line);
    return expired
      ? { cause: "credentials-expired", message: "credentials refused: they expired (issue new ones with `leafmesh keys issue`)" }
      : { cause: "credentials-refused", message: "credentials refused: expired, revoked or from another mesh (`leafmesh keys list` on the keys host says which)" };
  }
  if (/(publish|subscription) violation|permissions violation|not permitted/i.test(line)) {
    const subject = /subject "?([^"\s]+)"?/i.exec(line)?.[1] ?? /"([^"]+)"/.exec(line)?.[1];
    return { cause: "permission-denied", message: `denied: ${subject ?? "a subject"} is not this node's to use` };
  }
  return undefined;
}

/**
 * What the node itself can tell about its credentials when its upstream (`refuser`: the hub, or its site) refuses
 * them: expired (the JWT says so), or else revoked / foreign (only the keys host knows which: `leafmesh keys list`).
 */
export function diagnoseCredentialsFile(credsFile: string, now: () => number = Date.now, refuser = "the hub"): string {
  const claims = readCredsClaims(credsFile);
  if (!claims) return `${credsFile} does not hold a NATS user JWT (not a .creds file made by \`leafmesh keys issue\`)`;
  if (claims.exp && claims.exp * 1000 <= now()) return `the credentials in ${credsFile} (node '${claims.name}') expired at ${new Date(claims.exp * 1000).toISOString()}: issue new ones with \`leafmesh keys issue --node ${claims.name}\``;
  return `the credentials in ${credsFile} (node '${claims.name}', user ${claims.sub}, issued ${new Date(claims.iat * 1000).toISOString()}) are not expired: ${refuser} refuses them because they were revoked or belong to another mesh (\`leafmesh keys list\` on the keys host says which)${rejoinAdvice(credsFile)}`;
}

/**
 * For a node that joined with a token (joined.json beside its creds, in DATA/keys): how it comes back once revoked.
 * It has no bundle to be given: its keys were made on it. Before, it was told to put "its new bundle" in place.
 */
export function rejoinAdvice(credsFile: string): string {
  const bundle = dirname(credsFile);
  if (!existsSync(join(bundle, "joined.json"))) return "";
  return `. This node joined with a token: if it was revoked, remove ${bundle} and start it again with a join token (it makes new keys; a revoked name may join again)`;
}

/** The user claims of a .creds file (name: the node), or undefined when it holds no user JWT. Throws when it cannot be read. */
export function readCredsClaims(credsFile: string): ReturnType<typeof decode<User>> | undefined {
  const jwt = /-----BEGIN NATS USER JWT-----\s*(\S+)\s*------END NATS USER JWT------/.exec(readFileSync(credsFile, "utf8"))?.[1];
  return jwt ? decode<User>(jwt) : undefined;
}

/**
 * This node's leaf refused again and again as a duplicate ("Duplicate Remote LeafNode Connection"): the hub
 * already holds a leaf from a server of the same name, and the two replace each other every second. Once is
 * a reconnect the hub had not yet seen the end of; three within a minute is a second machine running under
 * this node's name (a cloned image, a copied config or bundle).
 */
export function duplicateNodeExplainer(node: string, now: () => number = Date.now): (line: string) => string | undefined {
  const seen: number[] = [];
  return (line) => {
    if (!/Duplicate Remote LeafNode Connection/i.test(line)) return undefined;
    const at = now();
    seen.push(at);
    while (seen.length > 0 && seen[0] < at - 60_000) seen.shift();
    if (seen.length < 3) return undefined;
    return `another machine runs as node '${node}': the hub refuses this node's leaf as a duplicate again and again, and the two take the link from each other every second. Give each machine its own --node name and bundle (a cloned image, or a copied config?)`;
  };
}

/** Who refused this node's leaf: its site (an agent under --upstream-domain SITE dials that site's servers) or a hub. */
export function upstreamName(site: string | undefined): string {
  return site ? `its site '${site}'` : "the hub";
}

/**
 * "the hub refused this node's login at 127.0.0.1:7422", or "its site 'shop' refused …": who, and the address nats-server
 * names in the line ("127.0.0.1:7422 - lid:5 - Leafnode Error '…'"). Before, a node behind a site was told that the hub
 * refused it when its site had, and was not told where.
 */
export function leafRefuser(line: string, site?: string): string {
  const address = /(\S+:\d+) - lid:\d+ - /.exec(line)?.[1];
  return `${upstreamName(site)} refused this node's login${address ? ` at ${address}` : ""}`;
}

/**
 * One sentence for a refusal line of the agent's own nats-server (its leaf link to its upstream: a hub, or with `site`
 * its site's servers), or undefined for any other line. With the node's creds file, a refused login says whether the
 * credentials expired or were refused for another reason. For the nats-server supervisor: log the result at warn.
 */
export function explainLeafRefusal(line: string, options: { credsFile?: string; now?: () => number; site?: string } = {}): string | undefined {
  const refusal = classifyServerLogLine(line);
  if (!refusal) return undefined;
  if (refusal.cause === "credentials-revoked") {
    const joined = options.credsFile ? rejoinAdvice(options.credsFile) : "";
    // A node that joined with a token has no new bundle to be started with: only the way back that rejoinAdvice says.
    const message = joined ? "credentials revoked: this node's user key was revoked (keys revoke)" : refusal.message;
    return `${leafRefuser(line, options.site)}: ${message}${options.credsFile ? ` (${options.credsFile})${joined}` : ""}`;
  }
  if ((refusal.cause === "credentials-refused" || refusal.cause === "credentials-expired") && options.credsFile) {
    try {
      return `${leafRefuser(line, options.site)}: ${diagnoseCredentialsFile(options.credsFile, options.now, upstreamName(options.site))}`;
    } catch (error) {
      return `${refusal.message} (${options.credsFile} cannot be read: ${describeError(error)})`;
    }
  }
  return refusal.message;
}
