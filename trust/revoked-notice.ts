/**
 * Whether this node was told that it is revoked, and by what: its upstream refusing its leaf as revoked (nats-server
 * sends "User Authentication Revoked" once, when the revocation reaches the server that holds the leaf; every login
 * after that is a bare "Authorization Violation"), or its own certificate on the mesh's revocation list. Once told, a
 * process stays told: a revoked identity never comes back (a revoked node gets new keys: docs/trust.md), and what
 * waits on it, the certificate renewal of a joined node (trust/renewal.ts), ends instead of asking for ever.
 *
 * ```ts
 * const notice = new RevokedNotice();
 * notice.onRevoked((why) => log.error(`revoked: ${why}`));
 * notice.note("its site 'shop' refused this node's login at 127.0.0.1:7422: credentials revoked");
 * ```
 */
export class RevokedNotice {
  #why: string | undefined;
  readonly #listeners = new Set<(why: string) => void>();

  /** What said this node is revoked; undefined while nothing has. */
  get why(): string | undefined {
    return this.#why;
  }

  /** Told that this node is revoked: the first word stands, listeners hear it once. */
  note(why: string): void {
    if (this.#why !== undefined) return;
    this.#why = why;
    for (const listener of [...this.#listeners]) listener(why);
  }

  /** Calls `listener` once this node is known revoked (at once when it already is); returns how to stop listening. */
  onRevoked(listener: (why: string) => void): () => void {
    if (this.#why !== undefined) {
      listener(this.#why);
      return () => undefined;
    }
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }
}
