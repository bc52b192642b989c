/**
 * Opens a NATS connection with leafmesh's defaults (reconnect forever: the
 * server may be restarting under its supervisor) and turns failures into
 * messages that say which URL and what to check.
 *
 * ```ts
 * const connection = await connectNats({ servers: ["nats://127.0.0.1:4222"], name: "leafmesh-agent edge-a" });
 * ```
 */
import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import { LeafmeshError } from "../lib/errors.ts";

export interface ConnectNatsOptions extends Partial<ConnectionOptions> {
  servers: string[];
  name: string;
  /** @default true — processes reconnect forever; one-shot commands pass false. */
  keepReconnecting?: boolean;
}

export async function connectNats(options: ConnectNatsOptions): Promise<NatsConnection> {
  const { keepReconnecting = true, ...rest } = options;
  try {
    return await connect({
      timeout: 5_000,
      reconnect: keepReconnecting,
      maxReconnectAttempts: keepReconnecting ? -1 : 0,
      reconnectTimeWait: 250,
      pingInterval: 10_000,
      // nats.js captures a stack trace (two Error objects) for every request, in case it times out: at
      // 10,000 services the hub's 20,000 KV puts spent ~0.65 s of CPU on them (--cpu-prof, issue 17).
      // A timeout still fails with its own error; only the caller's frames are missing from its stack.
      noAsyncTraces: true,
      ...rest,
    });
  } catch (cause) {
    const message = (cause as Error).message || String(cause);
    // A hub's client port speaks TLS, an agent's local one does not: the hub's credentials were used on an agent's port.
    const hint = /does not support 'tls'/.test(message)
      ? "That server does not speak TLS, as a hub's client port does: for an agent's (or a site server's) local port, give its name with --node (and --site for a site) besides --keys"
      : "Is the leafmesh hub or agent running there, and is that its client address?";
    throw new LeafmeshError("NATS_UNREACHABLE", `cannot connect to NATS at ${options.servers.join(", ")}: ${message}. ${hint}`, { cause });
  }
}

/** The URL a process uses to reach the server it runs: a wildcard listen address is reached on loopback. */
export function localClientUrl(client: { host: string; port: number }): string {
  const host = client.host === "0.0.0.0" || client.host === "::" ? "127.0.0.1" : client.host.includes(":") ? `[${client.host}]` : client.host;
  return `nats://${host}:${client.port}`;
}
