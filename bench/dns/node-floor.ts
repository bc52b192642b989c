/**
 * The floor of a DNS server in one Node event loop, for bench/dns: every query
 * answered with its own bytes, the QR bit set (a reply with no records), without
 * parsing, lookup or encoding. What node:dgram alone costs per query (a receive
 * and a send through libuv), against which leafmesh's answering is measured.
 *
 *   node bench/dns/node-floor.ts <port>   (prints "ready <port>")
 */
import { createSocket } from "node:dgram";

const port = Number(process.argv[2] ?? 0);
const socket = createSocket({
  type: "udp4",
  recvBufferSize: 4 * 1024 * 1024,
  sendBufferSize: 4 * 1024 * 1024,
  // As leafmesh's transport: replies go to an IP, never through a name lookup.
  lookup: (address, _options, callback) => (callback as (error: null, address: string, family: number) => void)(null, address, 4),
});
socket.on("error", () => undefined);
socket.on("message", (query, from) => {
  if (query.byteLength < 12) return;
  query[2] |= 0x80;
  socket.send(query, from.port, from.address);
});
socket.bind(port, "127.0.0.1", () => console.log(`ready ${socket.address().port}`));
process.on("SIGTERM", () => socket.close(() => process.exit(0)));
