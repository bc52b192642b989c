/**
 * Which node a downstream leaf link comes from, for the fabric monitor of a hub or a site server. nats-server 2.9.10's
 * /leafz gives a leaf's address and account but no name, so "leaf link down" at a site named `127.0.0.1:52948`, which
 * tells an operator nothing once the node is gone. With the mesh's keys every node logs in with a user of its own account
 * (`node-<name>`, trust/claims.ts), and the server's monitor names each account it holds (`/accountz?acc=…`, its JWT's
 * name as `name_tag`): preloaded at start or pushed since. (Not the resolver directory's files: preloaded accounts are
 * held in memory only, and a site named its members only once an update had been pushed for them.) Without keys every
 * leaf is in the global account (`$G`) and stays known by its address.
 *
 * ```ts
 * const names = new LeafAccountNames((account) => monitorJson(`${base}/accountz?acc=${account}`, 2_000));
 * await names.learn(["ADZ…"]);
 * names.nodeOf("ADZ…"); // "edge-a"
 * ```
 */
import { nodeNamePattern } from "../bus/subjects.ts";

const accountKey = /^A[A-Z2-7]{55}$/;
const nodePrefix = "node-";

/** What /accountz?acc=… answers (the fields used here). */
export interface AccountDetail {
  account_detail?: { name_tag?: string };
}

export class LeafAccountNames {
  readonly #ask: (account: string) => Promise<AccountDetail | undefined>;
  readonly #known = new Map<string, string>();

  constructor(ask: (account: string) => Promise<AccountDetail | undefined>) {
    this.#ask = ask;
  }

  /** Asks the monitor for the accounts not named yet (names found are kept: an account's name does not change). */
  async learn(accounts: Iterable<string | undefined>): Promise<void> {
    const unknown = new Set([...accounts].filter((account): account is string => !!account && accountKey.test(account) && !this.#known.has(account)));
    await Promise.all(
      [...unknown].map(async (account) => {
        const name = (await this.#ask(account).catch(() => undefined))?.account_detail?.name_tag;
        const node = name?.startsWith(nodePrefix) ? name.slice(nodePrefix.length) : undefined;
        if (node && nodeNamePattern.test(node)) this.#known.set(account, node);
      }),
    );
  }

  /** The node of `account`, once learnt; undefined for another account (a site's, the global one) or one not yet named. */
  nodeOf(account: string | undefined): string | undefined {
    return account ? this.#known.get(account) : undefined;
  }
}
