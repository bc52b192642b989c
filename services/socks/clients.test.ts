/**
 * Who may use the SOCKS proxy: ranges as given, loopback by default, and over real sockets a client
 * outside them reset before any byte (counted), while a client inside is served.
 */
import { spawn } from "node:child_process";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { silentLogger } from "../../lib/log.ts";
import { startTarget, type FaultTarget } from "../../test/support/fault-targets.ts";
import { isLoopbackHost, socksClients } from "./clients.ts";
import { createSocksActor, type SocksActor } from "./index.ts";

describe("SOCKS clients", () => {
  it("matches addresses against CIDR ranges and single addresses, IPv4 seen through a dual-stack listener too", () => {
    const clients = socksClients(["10.0.0.0/24", "fd00::/64", "192.0.2.7"], "--socks-clients");
    for (const address of ["10.0.0.1", "10.0.0.255", "::ffff:10.0.0.9", "fd00::1", "192.0.2.7"]) expect(clients.allows(address), address).toBe(true);
    for (const address of ["10.0.1.1", "192.0.2.8", "fe80::1", "127.0.0.1", "", "not-an-address"]) expect(clients.allows(address), address).toBe(false);
  });

  it("refuses what is not a range, naming the flag", () => {
    for (const bad of ["10.0.0.0/33", "fd00::/129", "10.0.0.0/", "10.0.0.0/8/1", "example.com/24", "10.0.0.0/x"]) {
      expect(() => socksClients([bad], "--socks-clients"), bad).toThrow(`--socks-clients: '${bad}' is not an address or a CIDR range`);
    }
  });

  it("knows a loopback listen address", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "localhost"]) expect(isLoopbackHost(host), host).toBe(true);
    for (const host of ["0.0.0.0", "::", "10.0.0.5", "edge-a.example.net"]) expect(isLoopbackHost(host), host).toBe(false);
  });
});

describe("the SOCKS proxy with its clients named", () => {
  let echo: FaultTarget;
  let echoPort: number;
  let socks: SocksActor;

  beforeAll(async () => {
    echo = await startTarget("echo");
    echoPort = echo.port;
    socks = createSocksActor({ feed: new IndexFeed(), log: silentLogger(), node: "edge-a", listen: { host: "127.0.0.1", port: 0 }, clients: ["127.0.0.2/32"] });
    await socks.start();
  });
  afterAll(async () => {
    await socks.stop();
    await echo.close();
  });

  /** A SOCKS5 CONNECT to the echo from `localAddress`: what came back before the end, and how it ended. */
  function tryFrom(localAddress: string): Promise<{ outcome: string; bytes: number }> {
    return new Promise((resolve) => {
      const socket = connect({ host: "127.0.0.1", port: socks.address!.port, localAddress });
      let bytes = 0;
      socket.on("connect", () => socket.write(Uint8Array.of(5, 1, 0)));
      socket.on("data", (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes === 2) socket.write(Uint8Array.of(5, 1, 0, 1, 127, 0, 0, 1, echoPort >> 8, echoPort & 0xff));
        if (bytes >= 12) {
          socket.destroy();
          resolve({ outcome: "joined", bytes });
        }
      });
      socket.on("error", (error: NodeJS.ErrnoException) => resolve({ outcome: error.code ?? "error", bytes }));
      socket.on("close", () => resolve({ outcome: "closed", bytes }));
    });
  }

  it("resets a client outside the ranges before any byte, counted, and serves one inside", async () => {
    expect(await tryFrom("127.0.0.1")).toEqual({ outcome: "ECONNRESET", bytes: 0 });
    expect((socks.stats() as Record<string, number>)["refused: client not allowed"]).toBe(1);
    expect((await tryFrom("127.0.0.2")).outcome).toBe("joined");
  });

  it("counts a client that reset before it was accepted as gone, not as a client not allowed", async () => {
    const before = socks.stats() as Record<string, number>;
    // Another process connects 20 times from an allowed address and resets each at once, while this one is too busy to
    // accept: the kernel hands the connections over afterwards, with no peer address left.
    const child = spawn(process.execPath, ["-e", `
      const net = require("node:net");
      let left = 20;
      for (let i = 0; i < 20; i++) {
        const socket = net.connect({ host: "127.0.0.1", port: ${socks.address!.port}, localAddress: "127.0.0.2" });
        socket.on("error", () => undefined);
        socket.on("connect", () => { socket.resetAndDestroy(); if (--left === 0) process.stdout.write("done"); });
      }
    `]);
    let said = "";
    child.stdout.on("data", (chunk: Buffer) => (said += chunk.toString()));
    const busyUntil = Date.now() + 1_500;
    while (Date.now() < busyUntil) {
      // Busy on purpose (bounded): nothing is accepted meanwhile.
    }
    await new Promise((resolve) => child.once("exit", resolve));
    expect(said).toBe("done");
    await new Promise((resolve) => setTimeout(resolve, 200));
    const after = socks.stats() as Record<string, number>;
    expect(after["refused: client not allowed"] ?? 0).toBe(before["refused: client not allowed"] ?? 0);
    expect((after["client left before accept"] ?? 0) + (after["client left during the handshake"] ?? 0) - (before["client left before accept"] ?? 0) - (before["client left during the handshake"] ?? 0)).toBe(20);
  }, 15_000);
});
