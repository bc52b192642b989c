/**
 * The ceiling of an L4 proxy in one Node event loop, for bench/traffic: accept,
 * connect to the target, `pipe()` both ways, nothing else (no catalog, no
 * balancing, no admission, no counters). What leafmesh's proxy is measured
 * against beside haproxy: the share of the gap that is Node's, not leafmesh's.
 *
 *   node bench/traffic/node-pipe.ts 127.0.0.1:35201=198.18.0.2:5201 127.0.0.1:38080=198.18.0.2:8080
 *   stdout: listening
 */
import { connect, createServer } from "node:net";

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
          const upstream = connect({ ...target, noDelay: true });
          client.on("error", () => upstream.destroy());
          upstream.on("error", () => client.destroy());
          client.pipe(upstream).pipe(client);
        });
        server.listen(listen.port, listen.host, () => resolve());
      }),
  ),
);
console.log("listening");
