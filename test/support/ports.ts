/**
 * Free loopback ports for tests: a random port below the kernel's ephemeral range
 * that binds now (TCP and UDP), handed out never twice in one process.
 *
 * Not a port from listen(0): those come from the ephemeral range
 * (net.ipv4.ip_local_port_range, 32768–60999 here), where every outgoing
 * connection of every process also takes its local port. Between a test taking
 * the number and its server binding it, an outgoing connection (an agent's
 * upstream probe, a leaf reconnecting) could take it: a full run saw a leaf
 * nats-server die with "bind: address already in use" that way.
 */
import { createSocket } from "node:dgram";
import { createServer, isIPv6 } from "node:net";
import { isMainThread } from "node:worker_threads";

const handedOut = new Set<number>();
/**
 * Below 32768 (the ephemeral range's default start) and above the well-known and common service
 * ports, cut into slices: each vitest worker draws from its own (VITEST_POOL_ID, forks and threads
 * apart), so two files running at once never draw the same number between a draw and its bind.
 * Drawn at random from one shared range, about one pair of files a run did (two workers' hubs on
 * one port), where the kernel's listen(0) had only the outgoing connections to fear.
 */
const slices = 17;
const sliceSize = Math.floor((32_000 - 12_000) / slices);
const poolId = Number(process.env.VITEST_POOL_ID ?? 0);
/** 0: outside vitest (benches, scripts); 1–8: a forks worker; 9–16: a threads worker. */
const slice = poolId <= 0 ? 0 : isMainThread ? 1 + ((poolId - 1) % 8) : 9 + ((poolId - 1) % 8);
const range = { from: 12_000 + slice * sliceSize, to: 12_000 + (slice + 1) * sliceSize };

function bindable(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/**
 * Free for UDP too: a DNS server takes both. A port that another process holds for UDP alone (a fake
 * upstream of a vitest run beside this one: every run's worker 1 draws from the same slice) passed the
 * TCP check; unbound, given it, cannot bind and exits, and its start probe (waitForAnswer) is answered by
 * that process, so the test asks a stranger. Shown with a process holding UDP on the slice's even ports:
 * forwarder.test.ts's failover test got an answer with no records in 9 runs of 12.
 */
function bindableUdp(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket(isIPv6(host) ? "udp6" : "udp4");
    socket.once("error", () => {
      socket.close();
      resolve(false);
    });
    socket.bind(port, host, () => socket.close(() => resolve(true)));
  });
}

/** A listener: a port of 127.0.0.1, or a host and port (a service port's own address on the agent's shared TCP listener). */
export type ListenTarget = number | { host: string; port: number };

export const toAddress = (target: ListenTarget): { host: string; port: number } => (typeof target === "number" ? { host: "127.0.0.1", port: target } : target);

export async function freePort(host = "127.0.0.1"): Promise<number> {
  // Bounded: 2,000 tries over the slice's ~1,176 ports.
  for (let attempt = 0; attempt < 2_000; attempt++) {
    const port = range.from + Math.floor(Math.random() * (range.to - range.from));
    if (handedOut.has(port)) continue;
    if (!(await bindable(port, host)) || !(await bindableUdp(port, host))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`no free port on ${host} between ${range.from} and ${range.to} after 2,000 tries`);
}

/**
 * Polls `check` until it returns a value other than undefined/false, or throws after `timeoutMs`; `intervalMs` between
 * looks (a look that starts a process costs ~0.4 s of CPU on a 2-core test machine: poll such a look slowly).
 */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000, what = "condition", intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value as T;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastError });
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
