/** The addresses of this machine's interfaces (IPv4 and IPv6, loopback included), as Node lists them. */
import { networkInterfaces } from "node:os";

export function localAddresses(): Set<string> {
  const addresses = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const entry of list ?? []) addresses.add(entry.address);
  return addresses;
}
