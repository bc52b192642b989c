/**
 * The node's connections to the cloud, counted from the kernel's socket table
 * (/proc/net/tcp and tcp6 of the network namespace `leafmesh status` runs in):
 * every TCP connection whose far end is one of the node's upstreams' addresses.
 * A node behind NAT should hold exactly one, its leaf link, whatever rides it
 * (control, catalog, relayed streams): `status` shows them (docs/one-connection.md).
 *
 * ```ts
 * cloudConnections(readFileSync("/proc/net/tcp", "utf8"), ["198.18.64.1"]); // [{ local: "198.18.65.10:40312", remote: "198.18.64.1:7422", state: "ESTABLISHED" }]
 * ```
 */
import { readFileSync } from "node:fs";

export interface SocketEntry {
  local: string;
  remote: string;
  state: string;
}

/** The kernel's TCP states by their hex code (include/net/tcp_states.h). */
const states: Record<string, string> = {
  "01": "ESTABLISHED",
  "02": "SYN_SENT",
  "03": "SYN_RECV",
  "04": "FIN_WAIT1",
  "05": "FIN_WAIT2",
  "06": "TIME_WAIT",
  "07": "CLOSE",
  "08": "CLOSE_WAIT",
  "09": "LAST_ACK",
  "0A": "LISTEN",
  "0B": "CLOSING",
};

/** "0100007F:1F90" (little-endian IPv4 and hex port) → "127.0.0.1:8080"; IPv6 as four little-endian words, IPv4-mapped ones shown as IPv4. */
export function decodeProcAddress(text: string): string {
  const [hexAddress, hexPort] = text.split(":");
  const port = Number.parseInt(hexPort, 16);
  if (hexAddress.length === 8) {
    const bytes = [0, 1, 2, 3].map((index) => Number.parseInt(hexAddress.slice(index * 2, index * 2 + 2), 16)).reverse();
    return `${bytes.join(".")}:${port}`;
  }
  const bytes: number[] = [];
  for (let word = 0; word < 4; word++) {
    const chunk = hexAddress.slice(word * 8, word * 8 + 8);
    for (let index = 3; index >= 0; index--) bytes.push(Number.parseInt(chunk.slice(index * 2, index * 2 + 2), 16));
  }
  if (bytes.slice(0, 10).every((byte) => byte === 0) && bytes[10] === 255 && bytes[11] === 255) return `${bytes.slice(12).join(".")}:${port}`;
  const groups = [];
  for (let index = 0; index < 16; index += 2) groups.push(((bytes[index] << 8) | bytes[index + 1]).toString(16));
  return `[${canonicalIp(groups.join(":"))}]:${port}`;
}

/** One spelling per IPv6 address (compressed, lower case: `0:0:0:0:0:0:0:1` and `::1` are one host); IPv4 as it is. */
export function canonicalIp(ip: string): string {
  if (!ip.includes(":")) return ip;
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return ip;
  }
}

/** The entries of a /proc/net/tcp(6) text. */
export function parseProcTcp(text: string): SocketEntry[] {
  return text
    .split("\n")
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length > 3)
    .map((fields) => ({ local: decodeProcAddress(fields[1]), remote: decodeProcAddress(fields[2]), state: states[fields[3].toUpperCase()] ?? fields[3] }));
}

const hostOf = (address: string) => address.slice(0, address.lastIndexOf(":")).replace(/^\[|\]$/g, "");

const isLoopback = (ip: string) => ip.startsWith("127.") || ip === "::1";

/**
 * Connections (not listeners, not closed) whose far end is one of `cloudHosts`. An upstream on this machine (a
 * one-machine mesh, an upstream on 127.0.0.1) is only its `loopbackPorts`: every other process's loopback
 * connection is not the cloud's.
 */
export function cloudConnections(tables: string[], cloudHosts: string[], loopbackPorts: number[] = []): SocketEntry[] {
  const hosts = new Set(cloudHosts.map((host) => canonicalIp(host.replace(/^\[|\]$/g, ""))));
  const ports = new Set(loopbackPorts);
  return tables.flatMap(parseProcTcp).filter((entry) => {
    if (entry.state === "LISTEN" || entry.state === "CLOSE" || entry.state === "TIME_WAIT") return false;
    const host = hostOf(entry.remote);
    return hosts.has(host) && (!isLoopback(host) || ports.has(Number(entry.remote.slice(entry.remote.lastIndexOf(":") + 1))));
  });
}

/** This namespace's socket tables, or none where they cannot be read (not Linux). */
export function readTcpTables(): string[] {
  return ["/proc/net/tcp", "/proc/net/tcp6"].flatMap((path) => {
    try {
      return [readFileSync(path, "utf8")];
    } catch {
      return [];
    }
  });
}
