/**
 * A lab endpoint: on TCP it says its name on a line, then echoes (and answers
 * "bye" after the client half-closes); on UDP it replies "<name>:<datagram>".
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
  socket.on("data", (data) => socket.write(data));
  socket.on("end", () => socket.end(`bye from ${name}\n`));
});
server.listen(Number(values.port ?? 8080), "0.0.0.0", () => process.stdout.write("listening\n"));
if (values["udp-port"]) {
  const udp = createSocket("udp4");
  udp.on("message", (message, remote) => udp.send(Buffer.concat([Buffer.from(`${name}:`), message]), remote.port, remote.address));
  udp.bind(Number(values["udp-port"]), "0.0.0.0");
}
