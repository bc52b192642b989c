/**
 * Enrolment by token, the keys directory's side and the hub's: `leafmesh keys token` makes a bounded
 * token, and a hub started with `--enrol` (it holds the whole keys directory: seeds and CA key)
 * answers joining nodes (`leafmesh agent --join`, trust/join.ts) on `enrol.join`.
 *
 * A joining node sends its node name, the public key of a NATS user key pair and a certificate
 * request for a TLS key it made itself (neither private key leaves the node), the token's id and
 * secret, and a time, all signed with that user key. The hub answers with the node's user JWT for
 * that public key, a certificate with CN and name = the node name only, the mesh CA and the
 * pre-shared key; or with a refusal and its reason (unknown, revoked, expired or used-up token, a
 * node name already issued to another key, ...).
 *
 * Who can ask: the request subject is exported by the mesh account (where the hub answers) to the
 * `enrol` account only, whose users (one per token, in the token) may publish that one subject, as
 * ordinary clients, until their token expires; the account caps connections and payloads
 * (claims.ts enrolLimits). Hubs require client certificates on their client port: a token carries a
 * client certificate of the enrolment CA, which only that port accepts (hub/client-ca.crt), not the
 * leaf or route ports. docs/trust.md ("Enrolment by token") says why this design.
 *
 * ```ts
 * const { token } = await createToken({ dir, ttlMs: 86_400_000, uses: 50, urls: ["tls://hub-1:4222"] });
 * const service = await startEnrolmentService({ servers, tls, dir, push, log });   // in the hub: trust/enrolment-service.ts
 * ```
 */
import { existsSync, readFileSync, copyFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes, X509Certificate } from "node:crypto";
import * as z from "../lib/schema/index.ts";
import { createAccount, createUser, fmtCreds, fromPublic } from "@nats-io/jwt";
import { nodeNamePattern } from "../bus/subjects.ts";
import { LeafmeshError, describeError } from "../lib/errors.ts";
import { makePrivateDir, writeFileWhole, writeSecretFile } from "./secret-files.ts";
import { checkCertificateRequest, createCertificateAuthority, issueCertificate, signCertificateRequest } from "./tls.ts";
import { certificateFingerprint } from "./revocation-list.ts";
import { meshAccountName, nodeAccountName, nodeUserJwt } from "./claims.ts";
import { enrolAccountJwt, enrolAccountName, enrolServiceUserJwt, enrolUserJwt } from "./enrolment-claims.ts";
import { ensureNodeAccount, nodeBundleDir, readKeyState, readSeed, seedFile, jwtFile, writeKeyState, type KeyState } from "./key-store.ts";
import { withKeysLock } from "./keys-lock.ts";
import { signEnrolAccount, storedEnrolRevocations } from "./token-revocations.ts";
import { encodeJoinToken, hashSecret, tokenRefusal, type TokenRefusalCode, type TokenState } from "./tokens.ts";

const enrolDir = (dir: string) => join(dir, "enrol");
/** The hubs' client port trusts the mesh CA and the enrolment CA (this file, read by security.ts); leaf and route ports the mesh CA only. */
const clientCaFile = (dir: string) => join(dir, "hub", "client-ca.crt");
/** The enrolling hub's user in the enrol account. */
export const enrolServiceCreds = (dir: string) => join(dir, "hub", "enrol-service.creds");

/**
 * Makes what enrolment needs, once: the enrol account (seed, JWT), the mesh account signed again with
 * the enrolment export, the enrolment CA and its one client certificate, and hub/client-ca.crt.
 * Returns the account JWTs that changed (to push to running hubs). Call it holding the lock.
 */
export async function ensureEnrolment(dir: string): Promise<string[]> {
  const state = readKeyState(dir);
  const changed: string[] = [];
  const operatorSeed = readSeed(join(dir, "operator.seed"));
  if (!state.enrolAccount || !existsSync(seedFile(dir, enrolAccountName))) {
    const account = createAccount();
    writeSecretFile(seedFile(dir, enrolAccountName), new TextDecoder().decode(account.getSeed()));
    state.enrolAccount = account.getPublicKey();
    const jwt = await enrolAccountJwt({ operatorSeed, accountSeed: readSeed(seedFile(dir, enrolAccountName)), meshAccount: state.meshAccount });
    writeFileWhole(join(dir, "accounts", `${enrolAccountName}.jwt`), jwt);
    changed.push(jwt);
    writeKeyState(dir, state);
  }
  if (!existsSync(enrolServiceCreds(dir))) {
    const user = createUser();
    const jwt = await enrolServiceUserJwt({ userSeed: new TextDecoder().decode(user.getSeed()), accountSeed: readSeed(seedFile(dir, enrolAccountName)) });
    writeSecretFile(enrolServiceCreds(dir), fmtCreds(jwt, user));
  }
  const enrol = enrolDir(dir);
  if (!existsSync(join(enrol, "client.crt"))) {
    makePrivateDir(enrol);
    await createCertificateAuthority({ certFile: join(enrol, "ca.crt"), keyFile: join(enrol, "ca.key"), name: "leafmesh enrolment CA" });
    // A CN that is no node name (a space): no peer takes it for a node, and no port but the hubs' client port accepts its CA.
    await issueCertificate({ caCertFile: join(enrol, "ca.crt"), caKeyFile: join(enrol, "ca.key"), certFile: join(enrol, "client.crt"), keyFile: join(enrol, "client.key"), commonName: "leafmesh enrolment", hosts: ["enrolment.invalid"] });
  }
  const bundle = `${readFileSync(join(dir, "ca", "ca.crt"), "utf8").trim()}\n${readFileSync(join(enrol, "ca.crt"), "utf8").trim()}\n`;
  if (!existsSync(clientCaFile(dir)) || readFileSync(clientCaFile(dir), "utf8") !== bundle) writeFileWhole(clientCaFile(dir), bundle);
  return changed;
}

/**
 * Issues the enrolment client certificate again (825 days, the same enrolment CA, which the hubs' client port
 * trusts) when it ends before `neededUntil`: every token carries it, and one made 825 days after enrolment was
 * set up carried an ended one that the hubs refused, so that no node could join.
 */
async function renewEnrolmentClientCertificate(dir: string, neededUntil: number): Promise<void> {
  const enrol = enrolDir(dir);
  if (Date.parse(new X509Certificate(readFileSync(join(enrol, "client.crt"))).validTo) >= neededUntil) return;
  await issueCertificate({ caCertFile: join(enrol, "ca.crt"), caKeyFile: join(enrol, "ca.key"), certFile: join(enrol, "client.crt"), keyFile: join(enrol, "client.key"), commonName: "leafmesh enrolment", hosts: ["enrolment.invalid"] });
}

export interface CreateTokenOptions {
  dir: string;
  ttlMs: number;
  uses: number;
  /** Client URLs of the hubs that serve enrolment (`leafmesh hub --enrol`), written into the token. */
  urls: string[];
  site?: string;
  tags?: string[];
  now?: () => number;
}

/** A new token: its state in state.json, and the token text (secret: give it only to the nodes that should join). */
export async function createToken(options: CreateTokenOptions): Promise<{ token: string; state: TokenState; changedAccounts: string[] }> {
  if (!Number.isInteger(options.uses) || options.uses < 1) throw new LeafmeshError("CONFIG_INVALID", `--uses: ${options.uses} is not a positive whole number`);
  if (options.urls.length === 0) throw new LeafmeshError("CONFIG_INVALID", "--url: give the client URLs of the hubs that serve enrolment (leafmesh hub --enrol), e.g. tls://hub-1.example.net:4222");
  if (options.site !== undefined && !nodeNamePattern.test(options.site)) throw new LeafmeshError("CONFIG_INVALID", `--site: '${options.site}' is not a site name (a DNS label)`);
  return withKeysLock(options.dir, async () => {
    const changedAccounts = await ensureEnrolment(options.dir);
    const state = readKeyState(options.dir);
    const now = (options.now ?? Date.now)();
    await renewEnrolmentClientCertificate(options.dir, now + options.ttlMs + 86_400_000);
    const id = randomBytes(6).toString("hex");
    const secret = randomBytes(24).toString("base64url");
    const expires = Math.floor((now + options.ttlMs) / 1000);
    const user = createUser();
    const userSeed = new TextDecoder().decode(user.getSeed());
    const jwt = await enrolUserJwt({ token: id, userSeed, accountSeed: readSeed(seedFile(options.dir, enrolAccountName)), expires });
    const entry: TokenState = {
      id,
      secretHash: hashSecret(secret),
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(expires * 1000).toISOString(),
      uses: options.uses,
      used: [],
      site: options.site,
      tags: options.tags ?? [],
      urls: options.urls,
      user: user.getPublicKey(),
    };
    state.tokens ??= {};
    state.tokens[id] = entry;
    writeKeyState(options.dir, state);
    const enrol = enrolDir(options.dir);
    const token = encodeJoinToken({
      id,
      secret,
      urls: options.urls,
      jwt,
      seed: userSeed,
      ca: readFileSync(join(options.dir, "ca", "ca.crt"), "utf8"),
      cert: readFileSync(join(enrol, "client.crt"), "utf8"),
      key: readSeed(join(enrol, "client.key")),
    });
    return { token, state: entry, changedAccounts };
  });
}

/**
 * Revokes a token: the enrolling hub refuses it from its next request on, saying so, and its NATS user is
 * revoked in the enrol account (returned as `accountJwt`, to push to the hubs): the hubs' resolvers keep that,
 * so a keys directory restored from a backup made before the revocation cannot bring the token back
 * (trust/token-revocations.ts). A token revoked by an older leafmesh (in state.json only) is signed into the
 * account now.
 */
export async function revokeToken(options: { dir: string; id: string; now?: () => number }): Promise<{ token: TokenState; accountJwt: string }> {
  return withKeysLock(options.dir, async () => {
    const state = readKeyState(options.dir);
    const token = state.tokens?.[options.id];
    if (!token) throw new LeafmeshError("TRUST_FAILED", `no token '${options.id}' in ${options.dir} (see \`leafmesh keys tokens\`)`);
    if (token.revokedAt && storedEnrolRevocations(options.dir)[token.user] !== undefined) throw new LeafmeshError("TRUST_FAILED", `token '${options.id}' is already revoked (at ${token.revokedAt})`);
    token.revokedAt ??= new Date((options.now ?? Date.now)()).toISOString();
    const accountJwt = await signEnrolAccount(options.dir, state);
    writeKeyState(options.dir, state);
    return { token, accountJwt };
  });
}

/** What a joining node sends (trust/join.ts), signed with its new user key. */
export const enrolRequestSchema = z.object({
  token: z.string().max(64),
  secret: z.string().max(256),
  node: z.string().max(63),
  /** The node's NATS user public key (U...): its seed stays on the node. */
  userKey: z.string().regex(/^U[A-Z2-7]{55}$/),
  /** A certificate request for the node's own TLS key, CN = node. */
  csr: z.string().max(8192),
  /** When the node signed it (ms): a request older than requestMaxAgeMs is refused. */
  at: z.number().int(),
  /** nkey signature (base64) by userKey over enrolSigningText(request). */
  signature: z.string().max(256),
});
export type EnrolRequest = z.infer<typeof enrolRequestSchema>;

/** The bytes the node signs: every field but the signature, in a fixed order. */
export function enrolSigningText(request: Omit<EnrolRequest, "signature">): Uint8Array {
  return new TextEncoder().encode(JSON.stringify([request.token, request.secret, request.node, request.userKey, request.csr, request.at]));
}

/**
 * @default 5 minutes — a request signed longer ago than this (or that far in the future: a wrong clock)
 * is refused: a captured request cannot be replayed later, and nothing of it is secret anyway.
 */
export const requestMaxAgeMs = 5 * 60_000;

export type EnrolRefusalCode = TokenRefusalCode | "malformed" | "bad-signature" | "stale-request" | "bad-node-name" | "node-taken" | "revoked-key" | "bad-csr" | "busy" | "not-pushed" | "interrupted" | "too-many-failures" | "internal";

/** Refusals a node answers by asking again with the same request (trust/join.ts): nothing of the request was wrong. */
export const askAgainCodes: ReadonlySet<EnrolRefusalCode> = new Set(["busy", "not-pushed", "interrupted"]);

export type EnrolReply =
  | { ok: true; node: string; jwt: string; cert: string; ca: string; swarmKey: string; site?: string; tags: string[]; token: string }
  | {
      ok: false;
      code: EnrolRefusalCode;
      reason: string;
      /** With "stale-request": the hub's clock (ms), so that a node whose clock is wrong can sign again by it. */
      hubTime?: number;
    };

class Refusal extends Error {
  readonly code: EnrolRefusalCode;
  readonly hubTime: number | undefined;
  constructor(code: EnrolRefusalCode, reason: string, hubTime?: number) {
    super(reason);
    this.code = code;
    this.hubTime = hubTime;
  }
}

/**
 * Handles one enrolment request against the keys directory (holding its lock): checks the request,
 * the token and the name, then issues the node for the key and certificate request it sent. Returns
 * the reply and the account JWTs to push before answering (a new node's account and every other).
 */
export async function enrolNode(dir: string, body: unknown, now: () => number = Date.now, certificateDays?: number): Promise<{ reply: EnrolReply; changedAccounts: string[] }> {
  try {
    const parsed = enrolRequestSchema.safeParse(body);
    if (!parsed.success) throw new Refusal("malformed", `the request is not an enrolment request (${parsed.error.issues[0]?.path.join(".") || "body"}: ${parsed.error.issues[0]?.message})`);
    const request = parsed.data;
    const { signature, ...signed } = request;
    let signatureOk = false;
    try {
      signatureOk = fromPublic(request.userKey).verify(enrolSigningText(signed), Buffer.from(signature, "base64"));
    } catch {
      signatureOk = false;
    }
    if (!signatureOk) throw new Refusal("bad-signature", "the request is not signed by the user key it carries");
    if (Math.abs(now() - request.at) > requestMaxAgeMs) {
      throw new Refusal("stale-request", `the request was signed at ${new Date(request.at).toISOString()}, more than ${requestMaxAgeMs / 60_000} minutes from the hub's clock (a replayed request, or the node's clock is wrong)`, now());
    }
    if (!nodeNamePattern.test(request.node)) throw new Refusal("bad-node-name", `'${request.node}' is not a node name (lowercase letters, digits and '-', at most 63)`);
    return await withKeysLock(dir, async () => {
      const state = readKeyState(dir);
      const token = state.tokens?.[request.token];
      const existing = state.nodes[request.node];
      // The same node asking again with the same key (its answer was lost): the same identity again, no use spent.
      const again = existing?.user === request.userKey && existing.enrolledBy === request.token && token?.secretHash === hashSecret(request.secret);
      if (!again) {
        const refusal = tokenRefusal(token, request.secret, now());
        if (refusal) throw new Refusal(refusal.code, refusal.reason);
        if (existing?.user) {
          throw new Refusal("node-taken", `node '${request.node}' is already issued to another key: a token cannot take over a node (revoke it first: leafmesh keys revoke --node ${request.node})`);
        }
        if (existing && existing.revocations[request.userKey] !== undefined) throw new Refusal("revoked-key", `user key ${request.userKey} of node '${request.node}' was revoked: join with a new key`);
        if (state.sites && Object.values(state.sites).some((site) => site.servers.includes(request.node))) {
          throw new Refusal("node-taken", `'${request.node}' is a site server's name`);
        }
      }
      try {
        await checkCertificateRequest(request.csr, request.node);
      } catch (error) {
        throw new Refusal("bad-csr", describeError(error));
      }
      return issueEnrolledNode(dir, state, request, token!, now, again, certificateDays);
    });
  } catch (error) {
    if (error instanceof Refusal) return { reply: { ok: false, code: error.code, reason: error.message, ...(error.hubTime !== undefined ? { hubTime: error.hubTime } : {}) }, changedAccounts: [] };
    throw error;
  }
}

/**
 * The account JWTs as the keys directory holds them, the node's own first, then every other node's, the mesh's
 * last: what a node asking again after a failed push needs the hubs to hold (its own account, and its peers' and
 * the mesh's imports of it).
 */
function storedAccountJwts(dir: string, state: KeyState, first: string): string[] {
  const nodes = [first, ...Object.keys(state.nodes).filter((node) => node !== first)];
  return [...nodes.map((node) => jwtFile(dir, nodeAccountName(node))), jwtFile(dir, meshAccountName)].filter((file) => existsSync(file)).map((file) => readFileSync(file, "utf8").trim());
}

async function issueEnrolledNode(dir: string, state: KeyState, request: EnrolRequest, token: TokenState, now: () => number, again: boolean, certificateDays?: number): Promise<{ reply: EnrolReply; changedAccounts: string[] }> {
  const ensured = await ensureNodeAccount(dir, state, request.node);
  const { entry } = ensured;
  // Asked again: the answer was lost, or the push before it failed and the hubs may not hold the node's account
  // (nor the imports of it): the accounts go to the hubs again, as the keys directory holds them.
  const changedAccounts = again ? storedAccountJwts(dir, state, request.node) : ensured.changedAccounts;
  const jwt = await nodeUserJwt({ node: request.node, userSeed: request.userKey, accountSeed: readSeed(seedFile(dir, nodeAccountName(request.node))) });
  const cert = await signCertificateRequest({ caCertFile: join(dir, "ca", "ca.crt"), caKeyFile: join(dir, "ca", "ca.key"), commonName: request.node, hosts: [request.node], csrPem: request.csr, days: certificateDays });
  const at = new Date(now()).toISOString();
  entry.user = request.userKey;
  entry.issuedAt = at;
  entry.expiresAt = undefined;
  entry.certificate = certificateFingerprint(cert);
  entry.renewedFrom = undefined;
  entry.enrolledBy = token.id;
  entry.site = token.site;
  entry.tags = token.tags;
  if (!again) token.used.push({ node: request.node, at });
  // What `keys issue` keeps of a node, but public only: the private keys are on the node.
  const bundle = nodeBundleDir(dir, request.node);
  makePrivateDir(bundle);
  writeFileWhole(join(bundle, "node.crt"), cert);
  copyFileSync(join(dir, "ca", "ca.crt"), join(bundle, "ca.crt"));
  writeKeyState(dir, state);
  return {
    reply: {
      ok: true,
      node: request.node,
      jwt,
      cert,
      ca: readFileSync(join(dir, "ca", "ca.crt"), "utf8"),
      swarmKey: Buffer.from(readFileSync(join(dir, "swarm.key"))).toString("base64"),
      site: token.site,
      tags: token.tags,
      token: token.id,
    },
    changedAccounts,
  };
}
