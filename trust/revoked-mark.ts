/**
 * A revocation this node was told of, kept in its data directory (`DATA/revoked.json`) for the next start. nats-server
 * says "User Authentication Revoked" to a revoked leaf once, when the revocation reaches it; every login after that,
 * the one of an agent started again included, is refused with a bare "Authorization Violation". So an agent restarted
 * after its revocation heard nothing that said revoked, and its certificate renewal (trust/renewal.ts) asked again every
 * minute for as long as it ran, where the same agent before the restart had ended it at once.
 *
 * The mark names the user the node's credentials hold: new keys (a new bundle, or a new join after removing DATA/keys)
 * are another user, and a mark of the old one is removed at the next start, so a node that came back is not held
 * revoked by its past. A revocation never comes back (docs/trust.md), so the mark is never cleared otherwise.
 *
 * ```ts
 * rememberRevocation(notice, { dataDir, creds, log }); // before anything listens to the notice
 * ```
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { readCredsClaims } from "./denials.ts";
import type { RevokedNotice } from "./revoked-notice.ts";

interface RevokedMark {
  /** The NATS user (its public key) that was revoked. */
  user: string;
  why: string;
  at: string;
}

export const revokedMarkFile = (dataDir: string): string => join(dataDir, "revoked.json");

function readMark(file: string): RevokedMark | undefined {
  try {
    const mark = JSON.parse(readFileSync(file, "utf8")) as Partial<RevokedMark>;
    return typeof mark.user === "string" && typeof mark.why === "string" && typeof mark.at === "string" ? (mark as RevokedMark) : undefined;
  } catch {
    return undefined; // none, or not ours to read: as if none
  }
}

/**
 * Tells `notice` at once when this node's current user was marked revoked before this start, and marks it when the
 * notice is told later. Nodes without credentials (no `creds`: insecure) have nothing to mark.
 */
export function rememberRevocation(notice: RevokedNotice, options: { dataDir: string; creds?: string; log: Logger }): void {
  let user: string | undefined;
  try {
    user = options.creds ? readCredsClaims(options.creds)?.sub : undefined;
  } catch {
    user = undefined; // the credentials' own problems are said where they are loaded
  }
  if (!user) return;
  const file = revokedMarkFile(options.dataDir);
  const mark = readMark(file);
  if (mark?.user === user) {
    notice.note(`${mark.why} (told at ${mark.at}, before this agent started again; kept in ${file})`);
    return;
  }
  if (mark) {
    rmSync(file, { force: true });
    options.log.info({ file, revokedUser: mark.user, user }, "the revocation marked in the data directory was of this node's earlier credentials: removed");
  }
  notice.onRevoked((why) => {
    try {
      writeFileSync(file, `${JSON.stringify({ user, why, at: new Date().toISOString() } satisfies RevokedMark)}\n`, { mode: 0o600 });
    } catch (error) {
      options.log.warn({ file, error: describeError(error) }, "could not keep this node's revocation for its next start: started again, it will not know it is revoked until told again");
    }
  });
}
