/** Types of bin/compile-cache.js (plain JavaScript: see there why). */
export function privateCompileCacheDir(parent?: string, uid?: number): string | { refused: string };
export function compileCacheFor(env?: NodeJS.ProcessEnv): string | { refused: string } | undefined;
export function withCompileCache(env?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
