/**
 * Stale UDP conntrack entries. The kernel NATs a UDP flow once, when its first
 * packet creates the conntrack entry; later packets of the same 5-tuple follow
 * that entry, not the rules. When a cluster IP:port's listener changes (a restart
 * takes new ports) a client that keeps its source port (a long-lived socket, a
 * resolver with a fixed port) would keep hitting the old, dead listener until the
 * entry expires, and each packet renews it. kube-proxy clears these entries for
 * the same reason; so do we, after every sync that changed a UDP mapping.
 */
import { ipv6ListenerAddress } from "../../bus/ipv6-listeners.ts";
import type { Logger } from "../../lib/log.ts";
import { runTool } from "./backend.ts";
import type { InterceptRule } from "./rules.ts";

/** Above this many changed UDP mappings one sweep over the listener address replaces per-target deletes. */
const perTargetLimit = 256;

/** UDP cluster IP:port targets whose mapping is new, changed or gone between two rule sets. */
export function changedUdpTargets(before: readonly InterceptRule[], after: readonly InterceptRule[]): { clusterIP: string; port: number }[] {
  // Keyed "<port> <clusterIP>": an IPv6 address holds colons.
  const mapping = (rules: readonly InterceptRule[]) =>
    new Map(rules.filter((rule) => rule.protocol === "UDP").map((rule) => [`${rule.port} ${rule.clusterIP}`, rule.refused ? "refused" : `${rule.listenHost} ${rule.listenerPort}`]));
  const old = mapping(before);
  const next = mapping(after);
  const changed: { clusterIP: string; port: number }[] = [];
  for (const key of new Set([...old.keys(), ...next.keys()])) {
    if (old.get(key) === next.get(key)) continue;
    const [port, clusterIP] = key.split(" ");
    changed.push({ clusterIP, port: Number(port) });
  }
  return changed;
}

export interface ConntrackResult {
  /** Deletes run (0 when nothing changed). */
  runs: number;
  /** Set when the conntrack tool is missing. */
  missing?: boolean;
}

export async function clearUdpConntrack(targets: readonly { clusterIP: string; port: number }[], options: { namespace?: string; listenHost: string; log: Logger }): Promise<ConntrackResult> {
  if (targets.length === 0) return { runs: 0 };
  /** false when the tool is missing; exit status 1 ("0 flow entries have been deleted") is the normal case: nothing was stale. */
  const run = async (args: string[]) => {
    try {
      const result = await runTool(["conntrack", "-D", "-p", "udp", ...args], { namespace: options.namespace });
      return !(result.code === 127 || /exec of "conntrack" failed|conntrack: not found/.test(result.stderr));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw error;
    }
  };
  if (targets.length > perTargetLimit) {
    // Every UDP entry whose reply comes from the listener address: ours, plus un-NATed local flows that the kernel simply re-creates.
    if (!(await run(["--reply-src", options.listenHost]))) return { runs: 0, missing: true };
    if (!targets.some((target) => target.clusterIP.includes(":"))) return { runs: 1 };
    await run(["-f", "ipv6", "--reply-src", ipv6ListenerAddress]);
    return { runs: 2 };
  }
  let runs = 0;
  for (const target of targets) {
    const family = target.clusterIP.includes(":") ? ["-f", "ipv6"] : [];
    if (!(await run([...family, "--orig-dst", target.clusterIP, "--dport", String(target.port)]))) return { runs, missing: true };
    runs++;
  }
  return { runs };
}
