/**
 * The serving end of a UDP-over-stream tunnel stream holds a bounded backlog
 * (issue 17, "bound buffers per stream"): when the stream back to the opener
 * cannot take more (a relay channel out of credit, a stalled peer) and the
 * target keeps answering, datagrams are dropped and counted, as the opening
 * end (services/traffic/udp-proxy.ts) already did, instead of queueing in the
 * stream's write buffer without end. A real UDP target floods answers; the
 * stream stands in for a carrier that accepts no more bytes.
 */
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { datagramBacklogBytes, encodeDatagram } from "../../bus/streams.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { encodeHeader } from "./stream-header.ts";
import { StreamServer } from "./stream-server.ts";

const datagramBytes = 4_096;
const answers = 1_024; // 4 MiB of answers, 16 times the backlog bound
let target: UdpSocket;
let closed = false;

beforeAll(async () => {
  target = createSocket("udp4");
  target.on("error", () => undefined); // a send refused while the flood runs (ECONNREFUSED from a closed opener) is not the test's subject
  // A target that answers one datagram with a flood, in bursts (so the kernel keeps most of them).
  target.on("message", (_message, from) => {
    const payload = Buffer.alloc(datagramBytes, 7);
    let sent = 0;
    const burst = () => {
      // The file's last burst may come after afterAll closed the socket: a flood cut short, never an uncaught error.
      if (closed) return;
      for (let index = 0; index < 32 && sent < answers; index++, sent++) target.send(payload, from.port, from.address);
      if (sent < answers) setImmediate(burst);
    };
    burst();
  });
  await new Promise<void>((resolve) => target.bind(0, "127.0.0.1", resolve));
});
afterAll(() => {
  closed = true;
  target.close();
});

describe("UDP over a tunnel stream, serving end", () => {
  it("takes a datagram that came in one read with the header (before its UDP socket was connected)", async () => {
    const server = new StreamServer({ node: "edge-b", log: silentLogger() });
    const written: Buffer[] = [];
    const carrier = new Duplex({ read() {}, write(chunk: Buffer, _encoding, callback) { written.push(chunk); callback(); } });
    carrier.push(Buffer.concat([encodeHeader({ host: "127.0.0.1", port: target.address().port, protocol: "UDP" }), encodeDatagram(Buffer.from("go"))]));
    void server.serve(carrier, "edge-a");
    // The target's answers come back framed: the datagram reached it.
    await eventually(() => written.reduce((total, chunk) => total + chunk.byteLength, 0) > 2 + datagramBytes, 10_000, "answers from the target");
    carrier.destroy();
  });

  it("drops and counts answers past the backlog bound when the stream back cannot take them", async () => {
    const server = new StreamServer({ node: "edge-b", log: silentLogger() });
    // A carrier with no credit left: nothing written to it ever completes.
    const stalled = new Duplex({ read() {}, write() {} });
    stalled.push(encodeHeader({ host: "127.0.0.1", port: target.address().port, protocol: "UDP" }));
    void server.serve(stalled, "edge-a");
    stalled.push(encodeDatagram(Buffer.from("go")));
    const frame = 2 + datagramBytes;
    const dropped = () => server.dropped.get("udp answer dropped: tunnel backlog") ?? 0;
    // Most of the flood has reached the serving end: held in the stream's buffer, or dropped.
    await eventually(() => stalled.writableLength + dropped() * frame >= (answers * frame) / 2, 10_000, "the answers at the serving end");
    expect(stalled.writableLength, `bytes queued in the stream's write buffer (${dropped()} dropped)`).toBeLessThanOrEqual(datagramBacklogBytes + frame + 64);
    expect(dropped()).toBeGreaterThan(0);
    stalled.destroy();
  });
});
