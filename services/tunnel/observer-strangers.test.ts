/**
 * The hub's NAT observer answers anyone who connects (it is how nodes behind
 * NATs learn their mapping). A client that trickles its line a byte at a time
 * is closed when the line time is up, as one that sends nothing: the socket's
 * inactivity timer restarted with each byte and held the socket for hours.
 * A client that sends more after its line gets one answer, and one probe: each
 * byte after a probe request made the hub probe the client again, twice.
 */
import { connect, createServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { freePort } from "../../test/support/ports.ts";
import { startObserver, type Observer } from "./nat.ts";

describe("the NAT observer and strangers", () => {
  let observer: Observer;
  let port: number;

  beforeAll(async () => {
    port = await freePort();
    observer = await startObserver({ hosts: ["127.0.0.1", "127.0.0.2"], ports: [port, await freePort()], log: silentLogger(), lineTimeoutMs: 800 });
  });
  afterAll(async () => {
    await observer?.close();
  });

  it("closes it when the line time is up, however often a byte comes", async () => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.on("error", () => undefined);
    await new Promise((resolve) => socket.once("connect", resolve));
    let sent = 0;
    // A byte every 200 ms, 30 of them (6 s), no newline: well within the observer's 1 KiB line.
    while (sent < 30 && !socket.destroyed && socket.readyState === "open") {
      socket.write("x");
      sent++;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(sent).toBeLessThan(30);
    socket.destroy();
  });

  it("probes a client once for its probe request, whatever it sends after it", async () => {
    // The client's side of a probe (as answerProbes does): a listener on the port it connects from, counting the probes.
    const localPort = await freePort();
    // Half-open: it keeps sending after the observer's answer and FIN, as a hostile client may.
    const socket: Socket = connect({ host: "127.0.0.1", port, localPort, allowHalfOpen: true });
    socket.on("error", () => undefined);
    await new Promise((resolve) => socket.once("connect", resolve));
    // It never answers a probe (as a client that drops them): each probe waits its time at the observer.
    const probes: Socket[] = [];
    const listener = createServer((probe) => {
      probes.push(probe);
      probe.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => listener.listen(localPort, "0.0.0.0", resolve));
    try {
      let answer = "";
      socket.on("data", (chunk: Buffer) => (answer += chunk.toString()));
      socket.write(`${JSON.stringify({ op: "probe" })}\n`);
      // Ten more pieces, each its own read at the observer, within the line time.
      for (let piece = 0; piece < 10 && !socket.destroyed; piece++) {
        await new Promise((resolve) => setTimeout(resolve, 40));
        socket.write("x");
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(answer.trim().split("\n")).toHaveLength(1);
      expect(probes).toHaveLength(2);
    } finally {
      for (const probe of probes) probe.destroy();
      socket.destroy();
      await new Promise((resolve) => listener.close(resolve));
    }
  });
});
