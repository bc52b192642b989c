/** Types of bin/memory.js (plain JavaScript: see there why). */
export function memoryOf(role: string | undefined): { semiSpaceMiB: number; oneArena: boolean } | undefined;
