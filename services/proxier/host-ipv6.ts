/**
 * Whether this host (network namespace) can carry IPv6 cluster IPs: the kernel
 * has IPv6 (no ipv6.disable=1 at boot) and it is not disabled by sysctl on the
 * whole host or on lo, where leafmesh's listener prefix lives
 * (bus/ipv6-listeners.ts). The answer is the reason it cannot, for the one log
 * line that says why IPv6 cluster IPs are not intercepted; IPv4 goes on.
 *
 * ```ts
 * const reason = await ipv6Unusable({ namespace });  // undefined, or "net.ipv6.conf.all.disable_ipv6 is 1 ..."
 * ```
 */
import { runTool, type BackendOptions } from "./backend.ts";

export async function ipv6Unusable(options: BackendOptions = {}): Promise<string | undefined> {
  for (const key of ["net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.lo.disable_ipv6"]) {
    // A tool that cannot run (no sysctl on PATH) is a reason too, never a crash: IPv4 goes on, and the backend's own check names its tool.
    const result = await runTool(["sysctl", "-n", key], options).catch((error: Error) => ({ code: -1, stdout: "", stderr: error.message }));
    if (result.code !== 0) return `the kernel has no IPv6 here (${key} cannot be read: ${result.stderr.trim() || `exit ${result.code}`})`;
    if (result.stdout.trim() !== "0") return `${key} is ${result.stdout.trim()} (IPv6 is disabled on this host)`;
  }
  return undefined;
}
