/**
 * The tunnel's listen addresses refused at start, in the agent's words. libp2p says it as "Some configured addresses
 * failed to be listened on, you may need to ... set `transportManager.faultTolerance` to NO_FATAL", then each address
 * with its error's stack: advice about a setting the agent does not offer, and no flag named.
 *
 * ```ts
 * tunnelListenProblem(error); // CONFIG_INVALID "--tunnel-listen /ip4/0.0.0.0/tcp/4101: the address is in use (…)", or undefined
 * ```
 */
import { LeafmeshError } from "../../lib/errors.ts";
import { listenCodeMeaning } from "../../lib/listen-errors.ts";

/** CONFIG_INVALID naming each refused --tunnel-listen address and why, when `error` is libp2p's listen failure (or a listener's CONFIG_INVALID, as it is); else undefined. */
export function tunnelListenProblem(error: unknown): LeafmeshError | undefined {
  // A listener of the tunnel's own (--tunnel-tls) said its flag already: passed on as it is, a configuration to fix.
  if (error instanceof LeafmeshError && error.code === "CONFIG_INVALID") return error;
  const message = error instanceof Error ? error.message : "";
  if (!message.startsWith("Some configured addresses failed to be listened on")) return undefined;
  // Each address on a line of its own: "  /ip4/127.0.0.1/tcp/4101: Error: listen EADDRINUSE: address already in use …".
  const failures = [...message.matchAll(/^\s*(\/\S+): (?:\w*Error: )?(.*)$/gm)].map(([, address, why]) => ({ address, why }));
  if (failures.length === 0) return undefined;
  const refused = failures.map(({ address, why }) => {
    const code = /\b(E[A-Z]+)\b/.exec(why)?.[1];
    return `--tunnel-listen ${address}: ${listenCodeMeaning(code, "another agent on this machine? each needs a --tunnel-listen port of its own") ?? why}`;
  });
  // The system's words for each address kept as the cause, without libp2p's advice and the stacks.
  return new LeafmeshError("CONFIG_INVALID", refused.join("\n"), { cause: new Error(failures.map(({ address, why }) => `${address}: ${why}`).join("; ")) });
}
