/**
 * A namespace's own resolver: `ip netns exec` bind-mounts /etc/netns/<namespace>/resolv.conf over
 * /etc/resolv.conf, so a command run in the namespace (curl, dig without @) asks the agent there.
 *
 * The labs made /etc/netns/<namespace> and took it away again, but left /etc/netns itself behind on a machine
 * that had none: `leafmesh demo --lab` changed the host it ran on. The removal here takes /etc/netns too once
 * nothing is left in it (another lab's namespace still in it keeps it; that lab's removal takes it).
 *
 * ```ts
 * const removeResolver = namespaceResolver("lmdm-ah1", "198.18.64.10");  // nameserver 198.18.64.10 in lmdm-ah1
 * removeResolver();  // its directory, and /etc/netns when empty
 * ```
 */
import { mkdirSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const netnsEtc = "/etc/netns";

/** Writes the namespace's resolv.conf (one try, 2 s: a test's DNS failure shows at once); returns its removal. */
export function namespaceResolver(namespace: string, nameserver: string): () => void {
  const dir = join(netnsEtc, namespace);
  // Another lab's removal may take an empty /etc/netns between the two directories being made: once more then.
  for (let attempt = 1; ; attempt++) {
    try {
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, "resolv.conf"), `nameserver ${nameserver}\noptions timeout:2 attempts:1\n`);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" || attempt === 3) throw error;
    }
  }
  return () => removeNamespaceResolver(namespace);
}

/** Removes a namespace's resolver directory (made now or by a killed earlier run), and /etc/netns when empty. */
export function removeNamespaceResolver(namespace: string): void {
  rmSync(join(netnsEtc, namespace), { recursive: true, force: true });
  try {
    rmdirSync(netnsEtc);
  } catch {
    // Not empty (another namespace's resolver, or the machine's own), or gone already: left as it is.
  }
}
