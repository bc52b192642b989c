/**
 * The contract every interception backend keeps (iptables, nftables), tested by
 * one suite (backends.test.ts): `prepare` checks the tool, removes what a crashed
 * run left and puts in the localnet guard (rules.ts); `sync` replaces the whole
 * rule set in one transaction; `remove` takes away everything the backend ever
 * adds; `inspect` reports what is in the kernel now, so tests and `leafmesh
 * status` can see exactly one set of rules.
 */
import { runCommand, type ExecResult } from "../../lib/command.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import type { InterceptRule } from "./rules.ts";

export const interceptModes = ["iptables", "nftables", "off"] as const;
export type InterceptMode = (typeof interceptModes)[number];

export interface InterceptState {
  /** Our rules now in the kernel, one normalised line each ("198.19.0.1:80/TCP -> 127.0.0.1:40001", "198.19.0.2:53/UDP -> refused"). */
  rules: string[];
  /** Hooks of the DNAT rules into the kernel's chains (jumps, base chains): exactly 2 when synced, 0 before and after. */
  hooks: number;
  /** The localnet guard (rules.ts) is in place: from prepare to remove. */
  guard: boolean;
  /** IPv6 (rules of IPv6 cluster IPs are in `rules`): its hooks and guard, when anything of them is in the kernel. */
  ipv6?: { hooks: number; guard: boolean };
}

export interface PrepareOptions {
  /** Also intercept IPv6 cluster IPs (the caller found IPv6 usable on the host): the IPv6 guard goes in. */
  ipv6?: boolean;
}

/** Whether IPv6 rules will be kept; when asked for and not, why (a missing tool). */
export type PrepareResult = { ipv6: boolean; reason?: string };

export interface InterceptBackend {
  readonly name: InterceptMode;
  /**
   * Checks the tool is there (TOOL_MISSING names the Debian package), removes leftovers (both families) and puts the
   * localnet guard in; with `ipv6`, the IPv6 guard too, and IPv6 cluster IPs' rules from then on.
   */
  prepare(options?: PrepareOptions): Promise<PrepareResult>;
  /** Makes the kernel hold exactly these rules, in one transaction per family (IPv6 rules only when prepared for them). */
  sync(rules: readonly InterceptRule[]): Promise<void>;
  /** Removes every rule, chain and table of ours, the guard too. */
  remove(): Promise<void>;
  inspect(): Promise<InterceptState>;
}

export interface BackendOptions {
  /** Run the tools inside this network namespace (`ip netns exec`); the current one when omitted. */
  namespace?: string;
}

export type ToolResult = ExecResult;

export function runTool(argv: string[], options: BackendOptions & { input?: string } = {}): Promise<ToolResult> {
  return runCommand(options.namespace ? ["ip", "netns", "exec", options.namespace, ...argv] : argv, { input: options.input });
}

export async function runToolChecked(argv: string[], options: BackendOptions & { input?: string } = {}): Promise<string> {
  const result = await runTool(argv, options);
  if (result.code !== 0) throw new LeafmeshError("PROXY_FAILED", `${argv.join(" ")} failed (exit ${result.code}): ${result.stderr.trim() || result.stdout.trim()}`);
  return result.stdout;
}

/**
 * What the IPv6 side of a tool says on a kernel without IPv6 (booted with ipv6.disable=1): "Address family not
 * supported by protocol", "Protocol not supported". Nothing of ours can be there, and IPv4 must go on.
 */
const noIpv6Kernel = /not supported/i;

/** The IPv6 step's result, or `absent` when the kernel has no IPv6; any other failure is thrown as it was. */
export async function unlessNoIpv6<T>(step: Promise<T>, absent: T): Promise<T> {
  try {
    return await step;
  } catch (error) {
    if (noIpv6Kernel.test((error as Error).message)) return absent;
    throw error;
  }
}

/** Whether `tool` is on PATH (in the namespace). */
export async function toolPresent(tool: string, options: BackendOptions = {}): Promise<boolean> {
  return (await runTool(["sh", "-c", `command -v ${tool}`], options)).code === 0;
}

/** Throws TOOL_MISSING naming the Debian package when `tool` is not on PATH. */
export async function requireTool(tool: string, debianPackage: string, intercept: string): Promise<void> {
  const found = await runTool(["sh", "-c", `command -v ${tool}`]);
  if (found.code !== 0) {
    throw new LeafmeshError("TOOL_MISSING", `--intercept ${intercept} needs ${tool}, which is not installed: apt-get install -y ${debianPackage} (or run with --intercept off)`);
  }
}
