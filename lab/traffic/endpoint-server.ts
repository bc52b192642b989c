/**
 * A lab endpoint: on TCP it says its name on a line, then echoes (and answers
 * "bye" after the client half-closes; an HTTP GET it echoes and closes); on UDP it
 * replies "<name>:<datagram>". It listens on [::], so at its IPv4 and IPv6 addresses.
 *
 *   node endpoint-server.ts --name s1 --port 8080 [--udp-port 8053]
 */
import { createSocket } from "node:dgram";
import { createServer } from "node:net";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { name: { type: "string" }, port: { type: "string" }, "udp-port": { type: "string" } } });
const name = values.name ?? "endpoint";
const server = createServer({ allowHalfOpen: true }, (socket) => {
  socket.on("error", () => undefined);
  socket.write(`${name}\n`);
  // An HTTP request line (curl in the IPv6 lab): echoed, then the connection ends, as an HTTP/0.9 answer does.
  socket.on("data", (data) => (data.subarray(0, 4).toString() === "GET " ? socket.end(data) : socket.write(data)));
  socket.on("end", () => socket.end(`bye from ${name}\n`));
});
// [::] takes IPv4 too (as ::ffff:a.b.c.d): an endpoint reached at an IPv6 address (an IPv6 EndpointSlice) and at an IPv4 one alike.
server.listen({ port: Number(values.port ?? 8080), host: "::", ipv6Only: false }, () => process.stdout.write("listening\n"));
if (values["udp-port"]) {
  const udp = createSocket({ type: "udp6", ipv6Only: false });
  udp.on("message", (message, remote) => udp.send(Buffer.concat([Buffer.from(`${name}:`), message]), remote.port, remote.address));
  udp.bind(Number(values["udp-port"]), "::");
}
