/**
 * Which node a downstream leaf link comes from, for the fabric monitor of a hub or a site server. nats-server 2.9.10's
 * /leafz gives a leaf's address and account but no name, so "leaf link down" at a site named `127.0.0.1:52948`, which
 * tells an operator nothing once the node is gone. With the mesh's keys every node logs in with a user of its own account
 * (`node-<name>`, trust/claims.ts), whose JWT the server's resolver directory holds as `<account>.jwt`: its name is the
 * node's. Without keys every leaf is in the global account (`$G`) and stays known by its address.
 *
 * ```ts
 * const nodeOf = leafAccountNames(resolverDir);
 * nodeOf("ADZ…"); // "edge-a"
 * ```
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { decode, type Account } from "@nats-io/jwt";
import { nodeNamePattern } from "../bus/subjects.ts";

const accountKey = /^A[A-Z2-7]{55}$/;
const nodePrefix = "node-";

/** A lookup of the node an account belongs to, from the account JWTs in `resolverDir` (names found once are kept). */
export function leafAccountNames(resolverDir: string): (account: string | undefined) => string | undefined {
  const known = new Map<string, string>();
  return (account) => {
    if (!account || !accountKey.test(account)) return undefined;
    const found = known.get(account);
    if (found) return found;
    let name: string | undefined;
    try {
      name = decode<Account>(readFileSync(join(resolverDir, `${account}.jwt`), "utf8").trim()).name;
    } catch {
      return undefined; // not (yet) in the resolver, or not a JWT: asked again at the next poll
    }
    const node = name?.startsWith(nodePrefix) ? name.slice(nodePrefix.length) : undefined;
    if (!node || !nodeNamePattern.test(node)) return undefined;
    known.set(account, node);
    return node;
  };
}
