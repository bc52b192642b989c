/**
 * One intercepting agent per network namespace. The interception rules are the namespace's, not the agent's:
 * table `ip leafmesh` (or chain LEAFMESH-SERVICES), the routes of proto 76 on `lo`, route_localnet and its guard.
 * A second agent on the same host with a --data of its own (a unit started twice under two names, a test copy
 * left running) replaced the first's rules with its own at start, and at its stop removed them all and turned
 * route_localnet off: the first ran on with no interception and said nothing, its cluster IPs unanswered.
 *
 * The lock is an abstract unix socket, `@leafmesh/intercept`: abstract names belong to the network namespace
 * (agents of two namespaces, as in the lab, never see each other's), and the kernel releases the name when its
 * process dies, so a kill -9 leaves nothing to take over. Whoever holds it answers a connection with who it is
 * (pid, node, data directory), which the refusal names. Like any port the agent listens on, a local process can
 * hold the name first; the refusal then names what it answered, or says it did not answer as an agent.
 *
 * ```ts
 * const lock = await holdInterception({ node: "edge-a", dataDir }); // or throws CONFIG_INVALID naming the holder
 * lock.release();                                                    // also released by the process's exit
 * ```
 */
import { createConnection, createServer } from "node:net";
import { describeError, LeafmeshError } from "../../lib/errors.ts";

export interface InterceptionHolder {
  pid: number;
  node: string;
  dataDir: string;
}

export interface InterceptionLock {
  release(): void;
}

/** The abstract socket's name; `namespace` (the tools' `ip netns exec` target, in tests) gives one of its own. */
export function interceptLockName(namespace?: string): string {
  return `\0leafmesh/intercept${namespace ? `/${namespace}` : ""}`;
}

export async function holdInterception(me: { node: string; dataDir: string; namespace?: string }): Promise<InterceptionLock> {
  const name = interceptLockName(me.namespace);
  const answer = `${JSON.stringify({ pid: process.pid, node: me.node, dataDir: me.dataDir } satisfies InterceptionHolder)}\n`;
  // Twice at most: the holder may exit between our listen and our question, and the name is free again.
  for (let attempt = 0; attempt < 2; attempt++) {
    const server = createServer((socket) => {
      // Whoever connects gets the answer and the end; a peer that resets is no concern of ours.
      socket.on("error", () => socket.destroy());
      socket.end(answer);
    });
    const listening = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      server.once("error", (error: NodeJS.ErrnoException) => resolve(error));
      server.listen(name, () => resolve(undefined));
    });
    if (!listening) {
      server.unref(); // the lock never keeps the process alive
      return { release: () => server.close() };
    }
    if (listening.code !== "EADDRINUSE") {
      throw new LeafmeshError("PROXY_FAILED", `could not take the interception lock (abstract socket @${name.slice(1)}): ${describeError(listening)}`, { cause: listening });
    }
    const holder = await askHolder(name);
    if (holder === "gone") continue;
    throw new LeafmeshError("CONFIG_INVALID", refusal(holder));
  }
  // Held twice by something that takes no connection: a socket bound without listening, or agents starting in turn.
  throw new LeafmeshError("CONFIG_INVALID", refusal("a socket that takes no connection"));
}

function refusal(holder: InterceptionHolder | string): string {
  const who = typeof holder === "string" ? `a process that did not answer as a leafmesh agent (${holder})` : `leafmesh agent ${holder.node} (pid ${holder.pid}, --data ${holder.dataDir})`;
  return `--intercept: cluster-IP interception in this network namespace is held by ${who}; two agents would replace each other's rules, and the first to stop would remove both: stop that one first, or run this one with --intercept off`;
}

/** What the holder says it is; "gone" when nobody listens any more; a string describing an answer that is not one. */
function askHolder(name: string): Promise<InterceptionHolder | "gone" | string> {
  return new Promise((resolve) => {
    const socket = createConnection(name);
    let text = "";
    const finish = (result: InterceptionHolder | "gone" | string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish("no answer within 2 s"), 2_000);
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      text += chunk;
      if (text.length > 4_096) finish("an answer over 4 KiB");
    });
    socket.on("end", () => {
      try {
        const parsed = JSON.parse(text) as Partial<InterceptionHolder>;
        if (typeof parsed.pid === "number" && typeof parsed.node === "string" && typeof parsed.dataDir === "string") return finish({ pid: parsed.pid, node: parsed.node, dataDir: parsed.dataDir });
      } catch (error) {
        return finish(`its answer is not JSON: ${describeError(error)}`);
      }
      finish("its answer names no agent");
    });
    socket.on("error", (error: NodeJS.ErrnoException) => finish(error.code === "ECONNREFUSED" || error.code === "ENOENT" ? "gone" : describeError(error)));
  });
}
