/**
 * The memory settings leafmesh starts each long-running role with (bin/leafmesh.js applies them by starting
 * again in place; the fabric bench's floor takes the agent's). Plain JavaScript, as bin/compile-cache.js: it is
 * read before the compile cache is on.
 *
 * V8's young generation capped per semi-space. V8's default on a large machine lets it grow past 100 MiB (Node 24
 * read a new space of 128 MiB after a loop of allocations on this project's 24 GiB machine); a start that decodes
 * 20,000 catalog objects fills it, copies what survives between its halves again and again, and RSS keeps it.
 * - On edge nodes (agent, site, demo): 4 MiB. Measured with bench/fabric, agent RSS at 10,000 services 345 → 225
 *   MiB, at 1,000 154 → 136 MiB, with no more CPU until the catalog is held.
 * - The hub: 16 MiB. It writes 10,000 services from manifests in 2.18 s instead of 3.03 (medians of six
 *   alternating runs each, 2026-12-06; 8 MiB 2.23 s), with ~0.35 s less CPU and 195 MiB of RSS instead of 280.
 *   At 4 MiB it had been slower than the default (3.65 s against 3.0).
 * The edge processes also start with one malloc arena (MALLOC_ARENA_MAX=1): glibc gives each thread that allocates
 * its own arena of up to 64 MiB (V8's compiler and GC threads, libuv's pool) and keeps what was freed in it; the
 * agent at 10,000 services held 20–25 MiB in four such arenas after loading the catalog. Measured with
 * bench/fabric's agent, two runs each: RSS 210–216 → 192–198 MiB, CPU until the catalog is held the same
 * (2.75–2.82 s; 2.76–2.80). Main-thread allocations take glibc's per-thread cache first, not the arena lock. The
 * hub keeps glibc's default.
 *
 * ```js
 * memoryOf("agent"); // { semiSpaceMiB: 4, oneArena: true }
 * memoryOf("keys");  // undefined: a one-shot command keeps Node's defaults
 * ```
 */
const edge = Object.freeze({ semiSpaceMiB: 4, oneArena: true });
const byRole = Object.freeze({ agent: edge, site: edge, demo: edge, hub: Object.freeze({ semiSpaceMiB: 16, oneArena: false }) });

/** @param {string | undefined} role @returns {{ semiSpaceMiB: number, oneArena: boolean } | undefined} */
export function memoryOf(role) {
  return role !== undefined && Object.hasOwn(byRole, role) ? byRole[role] : undefined;
}

/**
 * What a start of ROLE must add to run with its memory settings: Node flags and environment, leaving what the caller
 * chose itself (a --max-semi-space-size in `execArgv` or NODE_OPTIONS, a MALLOC_ARENA_MAX). Undefined when nothing is
 * to add. bin/leafmesh.js starts again in place with it; the test harness gives it at the first start.
 * LEAFMESH_ARENAS_DEFAULTED marks the arena set here, not by the caller: the demo takes both away from the processes
 * it starts (cli/demo.ts), so that each decides for its role and its hub keeps glibc's default.
 * @param {string | undefined} role @param {readonly string[]} execArgv @param {Record<string, string | undefined>} env
 * @returns {{ flags: string[], env: Record<string, string> } | undefined}
 */
export function memoryStart(role, execArgv, env) {
  const memory = memoryOf(role);
  if (!memory) return undefined;
  const semiSpaceChosen = [...execArgv, env.NODE_OPTIONS ?? ""].some((arg) => arg.includes("--max-semi-space-size"));
  const arenasChosen = env.MALLOC_ARENA_MAX !== undefined;
  if (semiSpaceChosen && (!memory.oneArena || arenasChosen)) return undefined;
  return {
    flags: semiSpaceChosen ? [] : [`--max-semi-space-size=${memory.semiSpaceMiB}`],
    env: memory.oneArena && !arenasChosen ? { MALLOC_ARENA_MAX: "1", LEAFMESH_ARENAS_DEFAULTED: "1" } : {},
  };
}
