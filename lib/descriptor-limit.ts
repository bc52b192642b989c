/**
 * Whether this process may open as many files as its connection limits need, said once at start when not. Node
 * raises its soft limit to the hard one by itself; a hard limit below the need stays (a container runtime's or a
 * unit's LimitNOFILE of 1,024 or 4,096). Every proxied connection costs the agent two descriptors (the client's and
 * the endpoint's), so at its default --proxy-max-connections of 2,048 such an agent ran out (EMFILE) far below its
 * own limits, and its listeners refusing clients at accept said nothing in the log (a counter only).
 *
 * ```ts
 * checkDescriptorLimit({ log, needed: 2 * 2_048 + 2 * 1_024 + 1_024 }); // warns "… may open 4096 files, … may need 7168 …"
 * ```
 */
import { readFileSync } from "node:fs";
import type { Logger } from "./log.ts";

/** This process's limit of open files (/proc/self/limits); undefined where there is none to read. */
export function descriptorLimit(): { soft: number; hard: number } | undefined {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((text) => text.startsWith("Max open files"));
    const [soft, hard] = (line?.slice("Max open files".length).trim().split(/\s+/) ?? []).map((value) => (value === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(value)));
    return Number.isFinite(soft) && Number.isFinite(hard) ? { soft, hard } : undefined;
  } catch {
    return undefined;
  }
}

/** Warns when the soft limit of open files is below `needed`; returns the limit read. */
export function checkDescriptorLimit(options: { log: Logger; needed: number }): { soft: number; hard: number } | undefined {
  const limit = descriptorLimit();
  if (limit && limit.soft < options.needed) {
    options.log.warn(
      { soft: limit.soft, hard: limit.hard, needed: options.needed },
      `this process may open ${limit.soft} files, and its connection limits may need ${options.needed} (two per proxied connection): past it, connections are refused (EMFILE); raise the limit (systemd: LimitNOFILE=${options.needed}; docker: --ulimit nofile=${options.needed}) or lower --proxy-max-connections and --socks-max-connections`,
    );
  }
  return limit;
}
