/**
 * Waits for a supervised nats-server that exited to be ready again (the supervisor restarts it with backoff):
 * a role whose first connection to its own server failed because the server died under it connects again then.
 *
 * ```ts
 * await readyAgain(server, 30_000, signal); // or rejects: given up, stopped, not back in time, or stopped by the signal
 * ```
 */
import { LeafmeshError } from "../lib/errors.ts";
import type { NatsServerSupervisor } from "./supervisor.ts";

export function readyAgain(server: NatsServerSupervisor, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const settle = (outcome?: Error) => {
      clearTimeout(timer);
      subscription.unsubscribe();
      signal?.removeEventListener("abort", onAbort);
      if (outcome) reject(outcome);
      else resolve();
    };
    const onAbort = () => settle(new LeafmeshError("INTERRUPTED", `stopped while its nats-server '${server.options.name}' was starting again`));
    const timer = setTimeout(() => settle(new LeafmeshError("NATS_SERVER_FAILED", `nats-server '${server.options.name}' was not ready again within ${timeoutMs / 1000} s`)), timeoutMs);
    const subscription = server.actor.subscribe((snapshot) => {
      if (snapshot.matches("ready")) settle();
      else if (snapshot.matches("failed") || snapshot.matches("stopped") || snapshot.matches("stopping")) settle(new LeafmeshError("NATS_SERVER_FAILED", `nats-server '${server.options.name}' is ${String(snapshot.value)}`));
    });
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) onAbort();
    else if (server.state === "ready") settle();
  });
}
