/** Types of bin/memory.js (plain JavaScript: see there why). */
export function memoryOf(role: string | undefined): { semiSpaceMiB: number; oneArena: boolean } | undefined;
export function memoryStart(role: string | undefined, execArgv: readonly string[], env: Record<string, string | undefined>): { flags: string[]; env: Record<string, string> } | undefined;
