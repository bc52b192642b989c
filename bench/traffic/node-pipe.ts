/**
 * The ceiling of an L4 proxy in one Node event loop, for bench/traffic: accept,
 * connect to the target, join the two sockets both ways, nothing else (no
 * catalog, no balancing, no admission, no counters). The join is the agent's
 * own (lib/join-streams.ts: data events and backpressure, as `pipe()` does, and
 * bulk read into buffers of its own, lib/read-buffers.ts),
 * so a cut on either side, an upstream that refuses, or a client that left
 * before the connect reaches the other side as a reset, never as a clean end. What leafmesh's proxy is measured
 * against beside haproxy: the share of the gap that is Node's, not leafmesh's.
 *
 *   node bench/traffic/node-pipe.ts 127.0.0.1:35201=198.18.0.2:5201 127.0.0.1:38080=198.18.0.2:8080
 *   stdout: listening
 */
import { connect, createServer } from "node:net";
import { joinStreams } from "../../lib/join-streams.ts";

const pairs = process.argv.slice(2).map((argument) => {
  const [from, to] = argument.split("=");
  const split = (address: string) => {
    const at = address.lastIndexOf(":");
    return { host: address.slice(0, at), port: Number(address.slice(at + 1)) };
  };
  if (!from || !to) throw new Error(`expected LISTEN=TARGET (host:port=host:port), got '${argument}'`);
  return { listen: split(from), target: split(to) };
});
if (pairs.length === 0) {
  console.error("usage: node bench/traffic/node-pipe.ts LISTEN_HOST:PORT=TARGET_HOST:PORT ...");
  process.exit(2);
}
process.once("SIGTERM", () => process.exit(0));
await Promise.all(
  pairs.map(
    ({ listen, target }) =>
      new Promise<void>((resolve) => {
        const server = createServer({ noDelay: true }, (client) => {
          joinStreams(client, connect({ ...target, noDelay: true }));
        });
        server.listen(listen.port, listen.host, () => resolve());
      }),
  ),
);
console.log("listening");
