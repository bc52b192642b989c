/**
 * The mesh's revocation list as the tunnel enforces it (issue 15, item 6). The
 * list itself (trust/revocation-list.ts, followed by trust/revocations.ts) names
 * revoked node certificates by their SHA-256; revoking a node's NATS credentials
 * cuts its links to hubs and sites, but its LAN and punched peers take its
 * certificate, not the hubs, as proof. So every place where the tunnel accepts a
 * peer's certificate asks here first, and refuses a revoked one:
 *
 * - direct TLS: the TLS stream server, and the dialler's check of the server's certificate;
 * - relayed and punched TLS (and their spares): both ends of the session over the channel;
 * - libp2p: the proof in identify (node-identity.ts), on every connection whatever carries it;
 * - node records: a record signed by a revoked certificate is not used (node-directory.ts).
 *
 * What was accepted before a revocation arrived is cut when it arrives: every TLS
 * session is tracked here with its peer's certificate, and is reset (an RST on its
 * TCP connection or a reset of its channel, never a clean close: STYLE 20) the
 * moment a list naming that certificate is in force; the host aborts the revoked
 * peer's libp2p connections, which resets their streams. Each refusal and cut is
 * counted by reason (STYLE 16) and logged once per node and reason.
 *
 * ```ts
 * const trust = new PeerTrust({ revocations, log });  // revocations: trust/revocations.ts followRevocations()
 * if (trust.isRevoked(fingerprint)) throw trust.refuse("direct TLS", "edge-c");
 * trust.track(session, fingerprint, "edge-c", "direct TLS");
 * trust.onRevocation(() => host.cutRevoked());
 * ```
 */
import { X509Certificate } from "node:crypto";
import type { Duplex } from "node:stream";
import { LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";

/** The revocation list in force: trust/revocations.ts's RevocationWatch fits (the tunnel needs only this much of it). */
export interface RevocationSource {
  isRevoked(certificateFingerprint: string): boolean;
  /** Called whenever a newer list is in force. */
  onChange(listener: () => void): () => void;
}

/** Where a certificate was shown: the carrier of a stream, the libp2p proof, or a node record. */
export type TrustPoint = "direct TLS" | "relayed TLS" | "punched TLS" | "libp2p" | "node record";

/** A certificate's name on the revocation list (trust/revocation-list.ts certificateFingerprint). */
export function fingerprintOf(certificatePem: string): string | undefined {
  try {
    return new X509Certificate(certificatePem).fingerprint256;
  } catch {
    return undefined;
  }
}

interface Tracked {
  fingerprint: string;
  node: string;
  point: TrustPoint;
}

export class PeerTrust {
  readonly #source: RevocationSource | undefined;
  readonly #log: Logger;
  readonly #sessions = new Map<Duplex, Tracked>();
  readonly #counts = new Map<string, number>();
  readonly #warned = new Set<string>();
  readonly #listeners = new Set<() => void>();
  readonly #unsubscribe: (() => void) | undefined;

  constructor(options: { revocations?: RevocationSource; log: Logger }) {
    this.#source = options.revocations;
    this.#log = options.log;
    this.#unsubscribe = options.revocations?.onChange(() => this.#enforce());
  }

  /** Whether the certificate with this fingerprint is on the list in force (an unknown fingerprint is not). */
  isRevoked(fingerprint: string | undefined): boolean {
    return fingerprint !== undefined && (this.#source?.isRevoked(fingerprint) ?? false);
  }

  /** A revoked certificate refused at `point`: counted, said once per node and point; returns the error to fail the handshake with. */
  refuse(point: TrustPoint, node: string | undefined, detail: Record<string, unknown> = {}): LeafmeshError {
    const who = node ? `node '${node}'` : "a peer";
    this.#count(`revoked certificate refused (${point})`, `${who}'s certificate is revoked: refused at the ${point} handshake`, { peer: node, ...detail });
    return new LeafmeshError("TRUST_FAILED", `${who}'s certificate is revoked (the mesh's revocation list): refused at the ${point} handshake`);
  }

  /** Something accepted before its certificate was revoked, cut now (a libp2p connection, a node record): counted and said once. */
  cut(point: TrustPoint, node: string): void {
    this.#count(`cut: certificate revoked (${point})`, `node '${node}''s certificate was revoked: its ${point} ${point === "node record" ? "is no longer used" : "connections are cut"}`, { peer: node });
  }

  /**
   * A session accepted from `node` with the certificate `fingerprint`: reset now if that is revoked,
   * or the moment a list naming it is in force. Forgotten when the session closes.
   */
  track(session: Duplex, fingerprint: string | undefined, node: string, point: TrustPoint): void {
    if (!fingerprint || !this.#source) return;
    if (session.destroyed) return;
    this.#sessions.set(session, { fingerprint, node, point });
    session.once("close", () => this.#sessions.delete(session));
    if (this.isRevoked(fingerprint)) this.#cutSession(session, this.#sessions.get(session)!);
  }

  /** Called after each newer list is in force and the tracked sessions it names were reset. */
  onRevocation(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Refusals and cuts, by reason. */
  counts(): Record<string, number> {
    return Object.fromEntries(this.#counts);
  }

  /** Sessions tracked now (for tests). */
  get tracked(): number {
    return this.#sessions.size;
  }

  stop(): void {
    this.#unsubscribe?.();
    this.#listeners.clear();
  }

  #enforce(): void {
    for (const [session, tracked] of [...this.#sessions]) if (this.isRevoked(tracked.fingerprint)) this.#cutSession(session, tracked);
    for (const listener of this.#listeners) listener();
  }

  #cutSession(session: Duplex, tracked: Tracked): void {
    this.#sessions.delete(session);
    this.cut(tracked.point, tracked.node);
    // Every tracked session is a TLS session of tls-streams.ts, joined to its carrier there (resetWithCarrier):
    // destroyed with an error, it resets its TCP connection or channel itself. (lib/join-streams.ts resetStream
    // resets the TCP handle under a TLS socket first; with the carrier's own reset after it, the agent died
    // with SIGSEGV in the revocation test: one reset, not two.)
    if (session.listenerCount("error") === 0) session.on("error", () => undefined);
    session.destroy(new LeafmeshError("TRUST_FAILED", `node '${tracked.node}''s certificate was revoked: its ${tracked.point} stream is cut`));
  }

  #count(reason: string, message: string, detail: Record<string, unknown>): void {
    this.#counts.set(reason, (this.#counts.get(reason) ?? 0) + 1);
    const key = `${String(detail.peer)} ${reason}`;
    if (this.#warned.has(key)) return;
    // Node names are the CA's (a revoked certificate verified against it): a bounded set, still capped.
    if (this.#warned.size >= 1_000) this.#warned.clear();
    this.#warned.add(key);
    this.#log.warn({ ...detail, reason }, message);
  }
}
