/**
 * Who asks for a punch, proven by the asker's certificate (security on).
 *
 * A punch request (`rpc.<node>.tunnel-punch`) reaches the answering node through the asker's
 * account, but nothing in the message says which account that was: the answering node read the
 * asker from the request's `from`. A stolen node's credentials could then name any node there.
 * Measured with edge-a's stolen bundle asking edge-b: requests "from" edge-c (with edge-c's peer
 * id, public in its record) took up edge-c's punch places at edge-b, so edge-c's own punches were
 * declined for its limit; requests from made-up names (no record, so no peer id to compare) were
 * all taken on, each holding a port, an observer query and a socket dialled to an address of the
 * asker's choosing.
 *
 * Now the asker signs the request with its node key (its certificate by the mesh CA, CN = its
 * name), binding it to the node it asks (`to`) and the time (`at`); the answering node takes on
 * only a request whose signature and certificate name `from`, whose certificate is not revoked,
 * that is addressed to it and at most `maxPunchRequestAgeMs` old, by the asker's clock set against this node's (the
 * offset its node record shows). Pure: node:crypto only.
 *
 * ```ts
 * const request = provePunchRequest({ from: "edge-a", peerId, nat, mapped, purpose }, { to: "edge-b", identity, now });
 * checkPunchRequest(request, { node: "edge-b", identity, now });   // undefined, or why it is refused
 * ```
 */
import { describeError } from "../../lib/errors.ts";
import { signNodeRecord, verifyNodeRecord } from "../../trust/record-signature.ts";
import type { PunchRequest } from "../../bus/rpc.ts";
import type { IsRevoked, NodeIdentity } from "./node-identity.ts";
import { fingerprintOf } from "./peer-trust.ts";

/**
 * @default 120_000 — how old (or how far ahead, by the two clocks) a signed request may be. A punch is
 * asked and answered within seconds; two minutes leave room for clocks that disagree a little.
 */
export const maxPunchRequestAgeMs = 120_000;

/** The bytes a punch request's signature covers: every field the answering side acts on. */
export function punchSigningText(request: PunchRequest): Uint8Array {
  const fields = ["leafmesh tunnel-punch 1", request.from, request.to ?? "", request.at ?? 0, request.peerId, request.nat, request.mapped.host, request.mapped.port, request.purpose ?? "libp2p"];
  return new TextEncoder().encode(JSON.stringify(fields));
}

/** `request` addressed to `to` now, signed with this node's key. */
export function provePunchRequest(request: Omit<PunchRequest, "to" | "at" | "proof">, options: { to: string; identity: NodeIdentity; now: number }): PunchRequest {
  const bound: PunchRequest = { ...request, to: options.to, at: options.now };
  const { cert, signature } = signNodeRecord({ record: punchSigningText(bound), certPem: options.identity.certPem, keyPem: options.identity.keyPem });
  return { ...bound, proof: { cert, signature } };
}

/** Why this node (`node`) refuses `request`'s claim to come from `request.from`, or undefined when it is proven. */
export function checkPunchRequest(
  request: PunchRequest,
  options: {
    node: string;
    identity: NodeIdentity;
    now: number;
    isRevoked?: IsRevoked;
    /**
     * This node's clock less the asker's, as the asker's node record tells (node-directory.ts `clockOffsetOf`): the
     * request's time is judged on this node's clock. Edge boxes' clocks disagree by minutes (no RTC, no NTP): judged
     * as written, every punch between two of them was refused, and their streams went through the relay.
     */
    peerClockOffsetMs?: number;
  },
): string | undefined {
  const claim = `a punch request claiming to be from '${request.from}'`;
  if (!request.proof) return `${claim} is not signed (an agent without --keys, an older leafmesh, or another node's credentials)`;
  if (request.to !== options.node) return `${claim} is addressed to '${request.to ?? "?"}', not to this node`;
  const offset = options.peerClockOffsetMs ?? 0;
  const age = options.now - ((request.at ?? 0) + offset);
  if (!(Math.abs(age) <= maxPunchRequestAgeMs)) {
    const clocks = offset ? ` (its clock is ${Math.round(Math.abs(offset) / 1000)} s ${offset > 0 ? "behind" : "ahead of"} this node's, by its node record)` : "";
    return `${claim} was signed at ${new Date(request.at ?? 0).toISOString()}, more than ${maxPunchRequestAgeMs / 1000} s from this node's clock${clocks}`;
  }
  try {
    verifyNodeRecord({
      node: request.from,
      envelope: { record: Buffer.from(punchSigningText(request)).toString("base64"), cert: request.proof.cert, signature: request.proof.signature },
      caPem: options.identity.caPem,
      now: () => options.now,
      what: "punch request",
    });
  } catch (error) {
    return describeError(error);
  }
  if (options.isRevoked?.(fingerprintOf(request.proof.cert))) return `${claim} is signed with a revoked certificate (the mesh's revocation list)`;
  return undefined;
}
