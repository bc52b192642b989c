/**
 * The hub's NAT observer answers anyone who connects (it is how nodes behind
 * NATs learn their mapping). A client that trickles its line a byte at a time
 * is closed when the line time is up, as one that sends nothing: the socket's
 * inactivity timer restarted with each byte and held the socket for hours.
 */
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { freePort } from "../../test/support/ports.ts";
import { startObserver, type Observer } from "./nat.ts";

describe("the NAT observer and a client that trickles its line", () => {
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
});
