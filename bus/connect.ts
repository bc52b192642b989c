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
    // Node's advice for a CA it does not know (--use-system-ca) is no use here: the mesh's CA comes with --keys.
    const message = ((cause as Error).message || String(cause)).replace(/; if the root CA is installed locally, try running Node\.js with --use-system-ca/, "");
    const hint = connectHint(message, { credentials: rest.authenticator !== undefined, tls: rest.tls !== undefined });
    throw new LeafmeshError("NATS_UNREACHABLE", `cannot connect to NATS at ${options.servers.join(", ")}: ${message}. ${hint}`, { cause });
  }
}

/** What to check, for the way a connection failed. */
function connectHint(message: string, given: { credentials: boolean; tls: boolean }): string {
  // A hub's client port speaks TLS, an agent's local one does not: the hub's credentials were used on an agent's port.
  if (/does not support 'tls'/.test(message)) {
    return "That server does not speak TLS, as a hub's client port does: for an agent's (or a site server's) local port, give its name with --node (and --site for a site) besides --keys";
  }
  if (/unable to verify|self[- ]signed|certificate/i.test(message) && !given.tls) {
    return "The server speaks TLS with a certificate of the mesh's own CA, as a secured hub does: give --keys DIR (the mesh's keys directory or a hub's copy of it)";
  }
  if (/Authorization Violation/i.test(message)) {
    return given.credentials
      ? "The server refused the credentials given: is --keys of this mesh, and does --node name the node whose agent listens there (or none, for a hub)?"
      : "The server is secured and wants credentials: give --keys DIR (for a hub, the mesh's keys directory or a hub's copy of it; for an agent, its bundle and --node NAME)";
  }
  return "Is the leafmesh hub or agent running there, and is that its client address?";
}

/**
 * Refuses a client listen address that the process's own loopback-only user cannot reach its server on. A site's own
 * process (its user of the mesh account) and the enrolling hub's enrolment service are allowed from 127.0.0.1 and
 * ::1 only (trust/claims.ts, trust/enrolment-claims.ts), and a process reaches its server at its listen address: on a
 * specific address it connects from that address, and nats-server refused it ("Bad src Ip"), which the process
 * said as "Authorization Violation … is --keys of this mesh" and exited. A wildcard or loopback address is reached
 * on loopback.
 */
export function checkLoopbackReachable(client: { host: string; port: number }, flag: string, why: string): void {
  const host = client.host.replace(/^\[|\]$/g, "").toLowerCase();
  const loopback = host === "0.0.0.0" || host === "::" || host === "::1" || host === "localhost" || /^127\.\d+\.\d+\.\d+$/.test(host);
  if (!loopback) {
    throw new LeafmeshError("CONFIG_INVALID", `${flag} ${client.host}:${client.port}: ${why} connects to it from loopback only, and on a specific address it would connect from that address, which the server refuses. Listen on 0.0.0.0:${client.port} (or [::]), or on 127.0.0.1:${client.port}`);
  }
}

/** The URL a process uses to reach the server it runs: a wildcard listen address is reached on loopback. */
export function localClientUrl(client: { host: string; port: number }): string {
  const host = client.host === "0.0.0.0" || client.host === "::" ? "127.0.0.1" : client.host.includes(":") ? `[${client.host}]` : client.host;
  return `nats://${host}:${client.port}`;
}
