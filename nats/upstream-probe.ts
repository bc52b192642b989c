/**
 * One probe of an upstream's leafnode port for relay choice: a TCP connect and
 * the server's INFO line, timed from the connect to the line. The INFO line is
 * what a leaf's own handshake waits for, so a slow or lossy path to the hub (or a
 * proxy in front of it) shows in this time, where a bare TCP connect measures
 * only the nearest TCP endpoint; and it names the server (`server_name`), the key
 * under which a hub publishes its relay load. nats-server 2.9 sends INFO in clear
 * also on a TLS leafnode port (the TLS handshake follows it), so the probe never
 * starts a handshake.
 *
 * ```ts
 * const probe = await probeLeafPort("hub-a", 7422, 1_000);
 * probe; // { ok: true, rttMs: 0.8, server: "hub-a" } or { ok: false, error: "timeout" }
 * ```
 */
import { connect } from "node:net";

export interface LeafPortProbe {
  ok: boolean;
  rttMs?: number;
  server?: string;
  error?: string;
}

/** @default 4096 — an INFO line is a few hundred bytes; a port that says more without a newline is no nats-server. */
const maxInfoBytes = 4096;

export function probeLeafPort(host: string, port: number, timeoutMs: number): Promise<LeafPortProbe> {
  const started = performance.now();
  return new Promise((resolve) => {
    let received = "";
    let settled = false;
    const socket = connect({ host, port });
    const finish = (probe: LeafPortProbe) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(probe);
    };
    const timer = setTimeout(() => finish({ ok: false, error: "timeout" }), timeoutMs);
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      received += chunk;
      const end = received.indexOf("\n");
      if (end < 0) {
        if (received.length > maxInfoBytes) finish({ ok: false, error: "no INFO line" });
        return;
      }
      const line = received.slice(0, end).trim();
      if (!line.startsWith("INFO ")) return finish({ ok: false, error: "not a nats-server" });
      let server: string | undefined;
      try {
        const info = JSON.parse(line.slice(5)) as { server_name?: unknown };
        if (typeof info.server_name === "string") server = info.server_name;
      } catch {
        return finish({ ok: false, error: "malformed INFO" });
      }
      finish({ ok: true, rttMs: Math.round((performance.now() - started) * 1000) / 1000, ...(server ? { server } : {}) });
    });
    socket.once("error", (error: NodeJS.ErrnoException) => finish({ ok: false, error: error.code ?? error.message }));
    socket.once("end", () => finish({ ok: false, error: "closed before INFO" }));
  });
}
