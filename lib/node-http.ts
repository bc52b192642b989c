/**
 * node:http without its ES module namespace. `import … from "node:http"` (named
 * imports too) makes Node build the module's namespace from every export, and
 * three of them (WebSocket, CloseEvent, MessageEvent) are lazy getters that load
 * undici: a bare Node 24 process went 44 → 58 MiB RSS on that import alone,
 * where `process.getBuiltinModule` hands over the same CommonJS exports and
 * loads nothing more. Every agent serves metrics and polls its server's monitor
 * over HTTP, so every agent paid it. Types still come from `import type`.
 *
 * ```ts
 * import { http } from "../lib/node-http.ts";
 * const server = http.createServer(handler);
 * ```
 */
export const http = process.getBuiltinModule("node:http");
