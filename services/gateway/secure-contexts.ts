/**
 * The TLS contexts of a gateway port's terminated routes, one per certificate
 * and key (a Secret's content, not its name: a rotated Secret gets a new one),
 * made once and kept while in use.
 */
import { createHash } from "node:crypto";
import { createSecureContext, type SecureContext } from "node:tls";

/** @default 64 — certificates rotate: the few in use are kept, not every one ever seen. */
const kept = 64;

export class SecureContexts {
  readonly #contexts = new Map<string, SecureContext>();

  /** The context of a certificate and its key; throws when they cannot be used together. */
  of(certificate: { key: string; cert: string }): SecureContext {
    const id = createHash("sha256").update(certificate.cert).update(certificate.key).digest("hex");
    let context = this.#contexts.get(id);
    if (!context) {
      context = createSecureContext({ key: certificate.key, cert: certificate.cert });
      if (this.#contexts.size > kept) this.#contexts.clear();
      this.#contexts.set(id, context);
    }
    return context;
  }
}
