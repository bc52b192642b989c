/**
 * A listener that cannot open at start, said with the flag that gave its address and why: a configuration to fix
 * (CONFIG_INVALID, exit 2), the system's words kept as the cause. One wording for every listener of a role.
 *
 * ```ts
 * throw listenRefused("--dns", { host: "127.0.0.1", port: 53 }, error) ?? error; // "--dns 127.0.0.1:53: the address is in use"
 * ```
 */
import { createServer } from "node:net";
import { LeafmeshError } from "./errors.ts";

const meanings: Record<string, string> = {
  EADDRINUSE: "the address is in use",
  EACCES: "permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)",
  EADDRNOTAVAIL: "this host has no such address",
};

/** What a listen error code (EADDRINUSE, EACCES, EADDRNOTAVAIL) means, `inUse` (what to do) added to a taken address's; undefined for others. */
export function listenCodeMeaning(code: string | undefined, inUse?: string): string | undefined {
  const meaning = code === undefined ? undefined : meanings[code];
  return meaning && inUse && code === "EADDRINUSE" ? `${meaning} (${inUse})` : meaning;
}

/** What a listen error, in `error` or its causes, means (listenCodeMeaning); undefined for others. */
export function listenMeaning(error: unknown, inUse?: string): string | undefined {
  let current: unknown = error;
  for (let depth = 0; current instanceof Error && depth < 5; depth++) {
    const meaning = listenCodeMeaning((current as NodeJS.ErrnoException).code, inUse);
    if (meaning) return meaning;
    current = current.cause;
  }
  return undefined;
}

/** "HOST:PORT", an IPv6 host in brackets. */
export function listenAddress(address: { host: string; port: number }): string {
  return `${address.host.includes(":") ? `[${address.host}]` : address.host}:${address.port}`;
}

/**
 * CONFIG_INVALID "FLAG HOST:PORT: why" when `error` is a listen error; undefined otherwise. `inUse` adds what to do
 * about a taken address ("another agent on this machine? …").
 */
export function listenRefused(flag: string, address: { host: string; port: number }, error: unknown, inUse?: string): LeafmeshError | undefined {
  const why = listenMeaning(error, inUse);
  if (!why) return undefined;
  return new LeafmeshError("CONFIG_INVALID", `${flag} ${listenAddress(address)}: ${why}`, { cause: error });
}

/**
 * Throws CONFIG_INVALID "FLAG HOST: why" when nothing can listen on HOST here: an address this host does not have, a
 * name that does not resolve. For a host whose listeners open later (--proxy-host: one per service port, as services
 * come): said at start, where otherwise each service's listener failed alone, as if only that service were broken.
 */
export async function checkListenHost(flag: string, host: string): Promise<void> {
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port: 0 }, resolve);
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const meaning = listenMeaning(error) ?? (code === "ENOTFOUND" || code === "EAI_AGAIN" ? "the name does not resolve" : undefined);
    if (meaning) throw new LeafmeshError("CONFIG_INVALID", `${flag} ${host}: ${meaning}`, { cause: error });
    throw error;
  } finally {
    server.close();
  }
}
