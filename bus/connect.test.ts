/**
 * What a failed connection says. The hub's credentials (TLS) used on an agent's
 * local port, which speaks no TLS, failed with nats.js's "server does not
 * support 'tls'" and the advice to check that a hub or agent runs there: it
 * does. The answer now says what to give instead (--node with --keys).
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mkdtempSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { startNatsServer, type TestServer } from "../test/support/trust-servers.ts";
import { connectNats } from "./connect.ts";

describe("connectNats on a server that speaks no TLS", () => {
  let server: TestServer;
  afterAll(async () => {
    await server?.stop();
  });

  it("says that the port speaks no TLS and how to reach an agent's local port", async () => {
    server = await startNatsServer({ name: "plain", dir: mkdtempSync(join(tmpdir(), "leafmesh-connect-")), config: ({ client, monitor }) => `listen: 127.0.0.1:${client}\nhttp: 127.0.0.1:${monitor}\n` });
    const failure = connectNats({ servers: [server.clientUrl], name: "test", keepReconnecting: false, tls: {} });
    await expect(failure).rejects.toThrow(/does not speak TLS.*--node/);
  });
});
