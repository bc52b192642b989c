/**
 * leafmesh's error vocabulary: every error a user may meet carries a code, a
 * message that says what was wrong and where, and the cause it came from.
 *
 * ```ts
 * throw new LeafmeshError("CONFIG_INVALID", "--hub: 'nats//x' is not a URL (expected nats://host:port)");
 * ```
 */
export const errorCodes = [
  "CONFIG_INVALID",
  "NATS_SERVER_MISSING",
  "NATS_SERVER_VERSION",
  "NATS_SERVER_FAILED",
  "NATS_UNREACHABLE",
  "NATS_DENIED",
  "KUBERNETES_FAILED",
  "NOT_RUNNING",
  "TOOL_MISSING",
  "DNS_FAILED",
  "PROXY_FAILED",
  /** The mesh could not carry a stream to a node (no path, a carrier failed, a cut). */
  "TUNNEL_FAILED",
  /** The stream reached the node, whose agent could not connect to the target (the target's fault, not the mesh's). */
  "TUNNEL_TARGET_REFUSED",
  "TRUST_FAILED",
  /** Refused at the door: a limit of this agent, or of the peer towards this client or node, was reached (not the target's fault). */
  "OVER_CAPACITY",
  "INTERNAL",
  /** A stop (Ctrl-C, SIGTERM) came while the command was starting: it stopped what it had started, and ended. */
  "INTERRUPTED",
] as const;

export type ErrorCode = (typeof errorCodes)[number];

export class LeafmeshError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LeafmeshError";
    this.code = code;
  }
}

/** The message of anything thrown, with the causes' messages appended once each. */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    const message = current instanceof Error ? current.message : String(current);
    if (!parts.some((part) => part.includes(message))) parts.push(message);
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(": ");
}
