/** Types of bin/compile-cache.js (plain JavaScript: see there why). */
export function privateCompileCacheDir(parent?: string, uid?: number): string | { refused: string };
