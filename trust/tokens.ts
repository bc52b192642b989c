/**
 * Join tokens: what `leafmesh keys token` makes and `leafmesh agent --join` carries (enrolment by
 * token, trust/enrolment.ts). A token is bounded: a time to live, a number of uses, optionally a
 * site and tags its nodes get; it is listed and revoked like a node.
 *
 * What the keys directory keeps of a token is its id, the SHA-256 of its secret and its bounds
 * (state.json `tokens`): a copy of state.json does not let anyone join. The token text itself
 * carries what a node needs before it has an identity of its own:
 *
 * - the id and the secret (proven to the hub);
 * - the URLs of the hubs that serve enrolment (`leafmesh hub --enrol`, client port);
 * - the mesh CA, to verify the hub;
 * - the token's own NATS user (the `enrol` account: it reaches the enrolment request and nothing
 *   else, expiring with the token) and the enrolment client certificate (of the enrolment CA, which
 *   only the hubs' client port accepts: hubs require client certificates there).
 *
 * So a token is about 3 KB of base64url, made for a Kubernetes Secret or an environment variable,
 * not for typing. The pure checks (which token is refused, and why) are here; the files and the
 * hub's service in trust/enrolment.ts.
 *
 * ```ts
 * const text = encodeJoinToken(payload);     // "lmjoin1.eyJ..."
 * const payload = decodeJoinToken(text);     // throws CONFIG_INVALID when it is no token
 * const refusal = tokenRefusal(state.tokens?.[payload.id], payload.secret, Date.now());
 * ```
 */
import { createHash, timingSafeEqual } from "node:crypto";
import * as z from "../lib/schema/index.ts";
import { LeafmeshError } from "../lib/errors.ts";

export interface TokenState {
  id: string;
  /** SHA-256 of the secret, hex: the secret itself is not kept. */
  secretHash: string;
  createdAt: string;
  expiresAt: string;
  /** How many nodes may join with it. */
  uses: number;
  /** The nodes that joined with it, in order. */
  used: { node: string; at: string }[];
  site?: string;
  tags: string[];
  /** The enrolment URLs written into the token. */
  urls: string[];
  /** The token's NATS user in the enrol account (U...). */
  user: string;
  revokedAt?: string;
}

export const joinTokenPrefix = "lmjoin1.";

export const joinTokenSchema = z.object({
  id: z.string().regex(/^[a-z0-9]{6,32}$/),
  secret: z.string().min(16),
  urls: z.array(z.string().min(1)).min(1),
  /** The token user's JWT and seed (the enrol account). */
  jwt: z.string().min(1),
  seed: z.string().startsWith("SU"),
  /** The mesh CA (PEM): the hub's certificate must chain to it. */
  ca: z.string().includes("BEGIN CERTIFICATE"),
  /** The enrolment client certificate and key (PEM), of the enrolment CA. */
  cert: z.string().includes("BEGIN CERTIFICATE"),
  key: z.string().includes("PRIVATE KEY"),
});
export type JoinToken = z.infer<typeof joinTokenSchema>;

export function encodeJoinToken(token: JoinToken): string {
  return joinTokenPrefix + Buffer.from(JSON.stringify(joinTokenSchema.parse(token))).toString("base64url");
}

/** The token's content; CONFIG_INVALID (saying what is wrong, never echoing the text) when it is not a leafmesh join token. */
export function decodeJoinToken(text: string): JoinToken {
  const trimmed = text.trim();
  if (!trimmed.startsWith(joinTokenPrefix)) throw new LeafmeshError("CONFIG_INVALID", `the join token (--join, --join-file) is not a leafmesh join token (it starts with '${joinTokenPrefix}'; make one with 'leafmesh keys token')`);
  const damaged = (what: string) => new LeafmeshError("CONFIG_INVALID", `the join token (--join, --join-file) is damaged (cut short when copied?): ${what}`);
  let content: unknown;
  try {
    content = JSON.parse(Buffer.from(trimmed.slice(joinTokenPrefix.length), "base64url").toString("utf8"));
  } catch {
    // Not the parser's words: they quote the token's bytes, and a token carries a secret.
    throw damaged("its content does not parse");
  }
  const parsed = joinTokenSchema.safeParse(content);
  if (!parsed.success) throw damaged(`its content lacks or mangles ${[...new Set(parsed.error.issues.map((issue) => String(issue.path[0] ?? "the whole")))].join(", ")}`);
  return parsed.data;
}

export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

export type TokenStatus = "active" | "expired" | "used up" | "revoked";

export function tokenStatus(token: TokenState, now: number): TokenStatus {
  if (token.revokedAt) return "revoked";
  if (Date.parse(token.expiresAt) <= now) return "expired";
  if (token.used.length >= token.uses) return "used up";
  return "active";
}

/** Why a refusal, as a code a counter and a test can name. */
export type TokenRefusalCode = "unknown-token" | "wrong-secret" | "revoked" | "expired" | "used-up";

/**
 * Why a token is refused, or undefined when it may enrol one more node. The secret is compared by
 * hash in constant time. Pure: the hub calls it for every request with the state read just then
 * (a revocation from the CLI applies to the next request).
 */
export function tokenRefusal(token: TokenState | undefined, secret: string, now: number): { code: TokenRefusalCode; reason: string } | undefined {
  if (!token) return { code: "unknown-token", reason: "this mesh made no such token (of another mesh, or its keys directory was replaced)" };
  const expected = Buffer.from(token.secretHash, "hex");
  const given = Buffer.from(hashSecret(secret), "hex");
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return { code: "wrong-secret", reason: `the secret does not match token ${token.id}` };
  switch (tokenStatus(token, now)) {
    case "revoked":
      return { code: "revoked", reason: `token ${token.id} was revoked at ${token.revokedAt}` };
    case "expired":
      return { code: "expired", reason: `token ${token.id} expired at ${token.expiresAt}` };
    case "used up":
      return { code: "used-up", reason: `token ${token.id} is used up (${token.used.length} of ${token.uses} uses: ${token.used.map((use) => use.node).join(", ")})` };
    default:
      return undefined;
  }
}

/** "24h", "30m", "7d", "90s" → milliseconds. */
export function parseDuration(text: string, what = "--ttl"): number {
  const match = /^(\d+)(s|m|h|d)$/.exec(text.trim());
  if (!match || Number(match[1]) === 0) throw new LeafmeshError("CONFIG_INVALID", `${what}: '${text}' is not a duration (a whole number and s, m, h or d: 90s, 30m, 24h, 7d)`);
  return Number(match[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as "s" | "m" | "h" | "d"];
}

export interface TokenListing {
  id: string;
  status: TokenStatus;
  used: number;
  uses: number;
  createdAt: string;
  expiresAt: string;
  site?: string;
  tags: string[];
  nodes: string[];
  revokedAt?: string;
}

export function listTokens(tokens: Record<string, TokenState> | undefined, now: number): TokenListing[] {
  return Object.values(tokens ?? {})
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
    .map((token) => ({
      id: token.id,
      status: tokenStatus(token, now),
      used: token.used.length,
      uses: token.uses,
      createdAt: token.createdAt,
      expiresAt: token.expiresAt,
      site: token.site,
      tags: token.tags,
      nodes: token.used.map((use) => use.node),
      revokedAt: token.revokedAt,
    }));
}
