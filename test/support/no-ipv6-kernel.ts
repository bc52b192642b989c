/**
 * A kernel booted with ipv6.disable=1, as the node's tools see it, for a process
 * started with `PATH=<dir>:$PATH`: every IPv6 step of ip, sysctl, nft and
 * ip6tables fails the way such a kernel makes it fail, every IPv4 one runs the
 * real tool. The lab's kernel has IPv6 and cannot drop it per namespace
 * (disable_ipv6 leaves the stack in), so this stands in for that kernel alone.
 *
 * ```ts
 * const dir = writeNoIpv6KernelTools("/tmp/lm6l-nov6");   // then: env PATH=${dir}:$PATH node agent-entry.ts ...
 * ```
 */
import { chmodSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const refused = "Address family not supported by protocol";

export function writeNoIpv6KernelTools(dir: string): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const tool = (name: string, body: string) => {
    writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(dir, name), 0o755);
  };
  // The real tool's full path, found on a PATH without this directory.
  const real = (name: string) => `PATH=$(echo "$PATH" | sed "s#${dir}:##") exec ${name} "$@"`;
  tool("ip", `for arg in "$@"; do [ "$arg" = "-6" ] && { echo "RTNETLINK answers: ${refused}" >&2; exit 2; }; done\n${real("ip")}`);
  tool("sysctl", `for arg in "$@"; do case "$arg" in net.ipv6.*) echo "sysctl: cannot stat /proc/sys/$(echo "$arg" | tr . /): No such file or directory" >&2; exit 255;; esac; done\n${real("sysctl")}`);
  // nft reads its transaction from stdin: an ip6 table in it fails the whole transaction, as the kernel does.
  tool("nft", `if [ "$1" = "-f" ]; then input=$(cat); case "$input" in *ip6*) echo "Error: Could not process rule: ${refused}" >&2; exit 1;; esac; printf '%s\\n' "$input" | { ${real("nft")}; }; fi\n${real("nft")}`);
  for (const name of ["ip6tables", "ip6tables-save", "ip6tables-restore"]) tool(name, `echo "${name} v1.8.9 (nf_tables): Could not fetch rule set generation id: ${refused}" >&2\nexit 1`);
  return dir;
}
