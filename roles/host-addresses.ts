/**
 * The addresses a hub or site server is reached at, for its fabric heartbeat: a leaf listening on a wildcard
 * (0.0.0.0:7422) is reached at any address of the host, and agents dial it by a name (tls://shop-7.lan:7422)
 * that the tree cannot match to a listen address. The agents' heartbeats say the address their leaf is
 * connected to (from /leafz), and `leafmesh status --tree` matches the two (cli/fabric-tree.ts).
 *
 * ```ts
 * hostAddresses({ host: "0.0.0.0", port: 7422 }); // ["198.18.222.21", "fe80::…"]
 * ```
 */
import { networkInterfaces } from "node:os";

export function hostAddresses(listen: { host: string }): string[] {
  if (!["0.0.0.0", "::", "[::]"].includes(listen.host)) return [listen.host];
  return Object.values(networkInterfaces())
    .flatMap((entries) => entries ?? [])
    .filter((entry) => !entry.internal)
    .map((entry) => entry.address);
}
