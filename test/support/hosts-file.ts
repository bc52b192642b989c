/**
 * Test tool: a nats-server that resolves host names the machine does not know
 * (`hub-1.example.net`) without touching the machine's /etc/hosts. It writes a
 * hosts file and a wrapper that starts nats-server in a mount namespace of its
 * own with that file bound over /etc/hosts (`unshare --mount`, root only). Hand
 * the wrapper to a leafmesh process as `LEAFMESH_NATS_SERVER`: its leaf server
 * then dials the hub by the name in the hub's certificate, as on a real network.
 *
 * ```ts
 * const binary = natsServerResolving(dir, { "hub-1.example.net": "127.0.0.1" });
 * await startAgentProcess({ ..., env: { LEAFMESH_NATS_SERVER: binary } });
 * ```
 */
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export function natsServerResolving(dir: string, names: Record<string, string>): string {
  const hosts = join(dir, "hosts");
  writeFileSync(hosts, ["127.0.0.1 localhost", "::1 localhost", ...Object.entries(names).map(([name, address]) => `${address} ${name}`), ""].join("\n"));
  const wrapper = join(dir, "nats-server-with-hosts");
  // unshare without --fork execs in place: the supervisor's child pid stays the nats-server's.
  writeFileSync(wrapper, `#!/bin/sh\nexec unshare --mount -- sh -c 'mount --bind "$0" /etc/hosts && exec nats-server "$@"' ${JSON.stringify(hosts)} "$@"\n`);
  chmodSync(wrapper, 0o755);
  return wrapper;
}
