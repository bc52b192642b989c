/**
 * A TCP connection to a target, given up after `timeoutMs` or when `signal` aborts (the client
 * that asked for it left): the one way the cluster-IP proxy, the SOCKS proxy and the ingress
 * gateway dial an endpoint on their own node. Errors are the socket's own (ECONNREFUSED…) or
 * PROXY_FAILED for a timeout or an abandoned connect, named after `what`.
 *
 * ```ts
 * const socket = await connectTcp({ host: "10.0.0.7", port: 8080, timeoutMs: 3_000, signal, what: "demo/web:http" });
 * ```
 */
import { connect, type Socket } from "node:net";
import { LeafmeshError } from "./errors.ts";

export function connectTcp(options: { host: string; port: number; timeoutMs: number; signal: AbortSignal; what: string; client?: string }): Promise<Socket> {
  const { host, port, timeoutMs, signal, what } = options;
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => socket.destroy(new LeafmeshError("PROXY_FAILED", `connect to ${what} timed out after ${timeoutMs} ms`)), timeoutMs);
    const abort = () => socket.destroy(new LeafmeshError("PROXY_FAILED", `connect to ${what} abandoned: the ${options.client ?? "client"} left`));
    signal.addEventListener("abort", abort, { once: true });
    const onError = (error: Error) => {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
      reject(error);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
      socket.off("error", onError);
      resolve(socket);
    });
  });
}
