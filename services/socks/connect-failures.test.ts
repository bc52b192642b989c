/**
 * A client that asks the SOCKS proxy for many targets that fail (a port scan through it, a script retrying a
 * dead host) gets each failure in its reply, counted; the agent's log says a burst of them once, not a line
 * per target.
 */
import { connect } from "node:net";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { createLogger } from "../../lib/log.ts";
import { freePort } from "../../test/support/ports.ts";
import { createSocksActor, type SocksActor } from "./index.ts";

/** A SOCKS5 CONNECT to 127.0.0.1:port: the reply code. */
function connectThrough(socksPort: number, port: number): Promise<number | string> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port: socksPort });
    let reply = Buffer.alloc(0);
    socket.on("connect", () => socket.write(Uint8Array.of(5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, port >> 8, port & 0xff)));
    socket.on("data", (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk]);
      if (reply.length >= 12) {
        socket.destroy();
        resolve(reply[3]);
      }
    });
    socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
    socket.on("close", () => resolve("closed"));
  });
}

describe("the SOCKS proxy and targets that fail", () => {
  const logLines: string[] = [];
  let socks: SocksActor;

  beforeAll(async () => {
    const log = createLogger({ level: "info", destination: new Writable({ write: (chunk, _encoding, callback) => (logLines.push(chunk.toString()), callback()) }) });
    socks = createSocksActor({ feed: new IndexFeed(), log, node: "edge-a", listen: { host: "127.0.0.1", port: 0 } });
    await socks.start();
  });
  afterAll(async () => {
    await socks?.stop();
  });

  it("answers each refused target with its reply and counts it, and logs the burst once", async () => {
    const closed = await freePort(); // nothing listens there
    const replies = [];
    for (let index = 0; index < 30; index++) replies.push(await connectThrough(socks.address!.port, closed));
    expect(replies).toEqual(Array.from({ length: 30 }, () => 5)); // connection refused (RFC 1928 §6)
    expect((socks.stats() as Record<string, number>)["connect failed"]).toBe(30);
    const said = logLines.filter((line) => line.includes("SOCKS connect failed"));
    expect(said).toHaveLength(1);
    expect(said[0]).toContain(`"port":${closed}`);
  });
});
