/**
 * A node's status from inside a lab namespace, asked from the test's own process. The lab has no route to
 * the test process, so this once ran `leafmesh status --json` inside the namespace: a Node process per
 * question (~0.4 s of CPU on the slower VMs CI runs on; 151 of them in a full run, most inside polls).
 * Now one socat per namespace and port forwards a loopback port of the test's namespace to the node's
 * 127.0.0.1:PORT in the lab's (a connection to it runs `ip netns exec NS socat`: two small C processes),
 * and the question is the command's own (connectClient, fetchNodeView) over it, with the same keys.
 *
 * ```ts
 * const view = await statusInNamespace(namespaces.a, { port: 4222, keys, as: { node: "node-a" } });
 * ```
 */
import { spawn, type ChildProcess } from "node:child_process";
import { connect as connectTcp } from "node:net";
import { Writable } from "node:stream";
import { connectClient } from "../../cli/client-connect.ts";
import { fetchNodeView } from "../../cli/status.ts";
import { eventually, freePort } from "./ports.ts";

const forwards = new Map<string, { port: number; child: ChildProcess }>();

/** A port on 127.0.0.1 here whose connections socat makes to 127.0.0.1:`port` in `namespace`; started once, stopped by stopNamespaceForwards. */
async function forwardInto(namespace: string, port: number): Promise<number> {
  const key = `${namespace}:${port}`;
  const known = forwards.get(key);
  if (known && known.child.exitCode === null && known.child.signalCode === null) return known.port;
  const local = await freePort();
  // Debian's socat 1.7.4 has no netns option (1.8 has): each connection runs a socat of its own in the namespace.
  const inside = `ip netns exec ${namespace} socat STDIO TCP:127.0.0.1:${port}`;
  const child = spawn("socat", [`TCP-LISTEN:${local},bind=127.0.0.1,reuseaddr,fork`, `EXEC:${inside.replaceAll(":", "\\:")}`], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  child.on("error", (error) => (stderr += error.message));
  forwards.set(key, { port: local, child });
  await eventually(
    () =>
      new Promise<boolean>((resolve, reject) => {
        if (child.exitCode !== null) return reject(new Error(`socat forwarding into ${namespace} ended: ${stderr.trim()}`));
        const probe = connectTcp(local, "127.0.0.1");
        probe.on("connect", () => (probe.destroy(), resolve(true)));
        probe.on("error", () => resolve(false));
      }),
    5_000,
    `socat to listen on 127.0.0.1:${local} for ${namespace}`,
  );
  return local;
}

/** Stops every forward (test/support/processes.ts's stopAllProcesses calls it). */
export function stopNamespaceForwards(): void {
  for (const { child } of forwards.values()) child.kill();
  forwards.clear();
}

/**
 * `leafmesh status --json` of the node whose NATS server listens on 127.0.0.1:`port` in `namespace`, with the
 * mesh's keys, as `leafmesh status --keys` with `as`'s --node and --site: a hub (none), an agent (`{ node }`) or a site
 * server (`{ site, node: SERVER }`).
 */
export async function statusInNamespace<View = Awaited<ReturnType<typeof fetchNodeView>>>(namespace: string, options: { port: number; keys: string; as?: { node?: string; site?: string } }): Promise<View> {
  const local = await forwardInto(namespace, options.port);
  let warnings = "";
  const stderr = new Writable({ write: (chunk, _encoding, done) => ((warnings += chunk.toString()), done()) });
  const connection = await connectClient({ keys: options.keys, ...options.as, nats: `nats://127.0.0.1:${local}` }, { command: "status", stderr }).catch((error: Error) => {
    throw new Error(`status of ${namespace}:${options.port}: ${error.message}${warnings ? ` (${warnings.trim()})` : ""}`);
  });
  try {
    const view = await fetchNodeView(connection, 2_000);
    return { status: view.status, services: view.services } as View;
  } finally {
    await connection.close();
  }
}
