/**
 * What the serving end says about a carrier that brings no stream: a TLS session made ahead of its
 * stream (a spare) is retired by its opener after a minute unused, and closes before any header.
 * That is said at debug; a header that came and is wrong, or one cut half-way, stays a warning.
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { StreamServer } from "./stream-server.ts";

let carrier: Server;
let lines: { level: number; msg: string }[] = [];
const served: Promise<void>[] = [];

beforeAll(async () => {
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  const server = new StreamServer({ node: "edge-b", log: createLogger({ level: "debug", destination }) });
  carrier = createServer((socket) => void served.push(server.serve(socket, "node edge-a (TLS)")));
  await new Promise<void>((resolve) => carrier.listen(0, "127.0.0.1", resolve));
});
afterAll(async () => {
  await new Promise((resolve) => carrier.close(resolve));
});

/** Opens a carrier, sends `bytes`, then closes it (or resets it), and waits until the server is done with it. */
async function carrierThat(bytes: Uint8Array, how: "end" | "reset"): Promise<{ level: number; msg: string }[]> {
  lines = [];
  const before = served.length;
  const socket: Socket = connect({ host: "127.0.0.1", port: (carrier.address() as { port: number }).port });
  socket.on("error", () => undefined);
  await new Promise((resolve) => socket.once("connect", resolve));
  if (bytes.length > 0) await new Promise((resolve) => socket.write(bytes, resolve));
  await new Promise((resolve) => setTimeout(resolve, 50));
  if (how === "end") socket.end();
  else socket.resetAndDestroy();
  await eventually(() => served.length > before, 5_000, "the carrier served");
  await served.at(-1);
  return lines.filter((line) => /tunnel (stream|carrier)/.test(line.msg) && line.msg !== "tunnel stream error");
}

describe("a carrier that brings no stream", () => {
  it("closed or reset before any byte (a spare session retired) is said at debug", async () => {
    for (const how of ["end", "reset"] as const) {
      const said = await carrierThat(new Uint8Array(0), how);
      expect(said.map((line) => [line.level, line.msg]), how).toEqual([[20, "tunnel carrier closed before a stream header (a spare session retired, or the peer left)"]]);
    }
  });

  it("a header that is not one, or is cut half-way, is still a warning", async () => {
    for (const [bytes, how] of [[Buffer.from("\u0000\u0004nope"), "end"], [Uint8Array.of(0), "end"], [Uint8Array.of(0, 40, 123), "reset"]] as const) {
      const said = await carrierThat(bytes, how);
      expect(said.map((line) => [line.level, line.msg]), `${Buffer.from(bytes).toString("hex")} ${how}`).toEqual([[40, "tunnel stream refused: bad header"]]);
    }
  });
});
