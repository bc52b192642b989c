/**
 * How the CLI's client commands (status, its --why, netcheck, sub, drill) connect to a hub's, site's or node's
 * server, and the one mismatch of versions this can mend. A leafmesh CLI from before 2026-12-06 (status, sub,
 * netcheck or drill given a node's bundle) reads the agent's local key from the bundle's local.nk and, finding
 * none, writes a random one; a newer agent derives its key from node.key (trust/local-nkey.ts) and uses a
 * local.nk only as it starts. So an older command run beside an agent that had started without one left a key
 * the agent does not know, and every command after it, the newest too, read that key and got a bare
 * "Authorization Violation" until the agent restarted. Refused so, a command tries the key derived from
 * node.key and, when the agent takes it, says which file is out of step and what to do.
 *
 * ```ts
 * const connection = await connectClient({ keys, node: "edge-a", nats: "nats://127.0.0.1:4222" }, { command: "status", stderr: io.stderr });
 * ```
 */
import { existsSync, readFileSync } from "node:fs";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats } from "../bus/connect.ts";
import { nodeInboxPrefix } from "../bus/subjects.ts";
import { derivedLocalSeed } from "../trust/local-nkey.ts";
import { loadNodeSecurity } from "../trust/security.ts";
import { nkeySeedAuthenticator } from "../trust/native-authenticator.ts";
import { bundleNode, clientConnectOptions } from "./security-options.ts";

export interface ClientConnectOptions {
  /** The command connecting: the connection's name (leafmesh-<command>) and the warning's prefix. */
  command: string;
  stderr: NodeJS.WritableStream;
  /** @default false — a one-shot command fails when the server goes; `sub` passes true and rides out a restart. */
  keepReconnecting?: boolean;
}

export async function connectClient(options: { keys?: string; node?: string; site?: string; nats: string }, client: ClientConnectOptions): Promise<NatsConnection> {
  const common = { servers: [options.nats], name: `leafmesh-${client.command}`, keepReconnecting: client.keepReconnecting ?? false };
  try {
    return await connectNats({ ...clientConnectOptions(options), ...common });
  } catch (error) {
    const stale = /Authorization Violation/i.test(String((error as Error).message)) ? staleLocalNkey(options) : undefined;
    if (!stale) throw error;
    let connection: NatsConnection;
    try {
      connection = await connectNats({ authenticator: nkeySeedAuthenticator(stale.derived), inboxPrefix: nodeInboxPrefix(stale.node), ...common });
    } catch {
      throw error; // not that either: the refusal as it was, with its hint
    }
    client.stderr.write(
      `leafmesh ${client.command}: warning: the agent of '${stale.node}' refused the key in ${stale.path} and took the one derived from node.key: ` +
        `that local.nk was written after the agent started, by a leafmesh status, sub, netcheck or drill from before 2026-12-06 (it writes a random key where it finds none). ` +
        `The agent takes it as its key at its next start; or remove it now (the agent writes its own back as it starts)\n`,
    );
    return connection;
  }
}

/** The node's bundle holds a local.nk other than the key derived from its node.key: its path, and the derived seed. */
function staleLocalNkey(options: { keys?: string; node?: string; site?: string }): { node: string; path: string; derived: string } | undefined {
  if (!options.keys || options.site) return undefined;
  const node = options.node ?? bundleNode(options.keys);
  if (!node) return undefined;
  const { files } = loadNodeSecurity(options.keys, node);
  if (!existsSync(files.localNkey)) return undefined;
  const derived = derivedLocalSeed(readFileSync(files.key), node);
  return readFileSync(files.localNkey, "utf8").trim() === derived ? undefined : { node, path: files.localNkey, derived };
}
