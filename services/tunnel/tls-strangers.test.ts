/**
 * Strangers at the tunnel's TLS port (--tunnel-tls, 4102): a client whose certificate does not verify is
 * refused, and the node's operator is told why (the certificate did not verify, and the check that failed), not the
 * "socket hang up" that Node reports for it. The dialling side of a mesh node is tls-streams.test.ts's.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { connect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { loadNodeSecurity, nodeIdentityPems } from "../../trust/security.ts";
import { startTlsStreamServer, type TlsStreamServer } from "./tls-streams.ts";
import type { NodeIdentity } from "./node-identity.ts";

describe("the tunnel's TLS port, to strangers", () => {
  const base = mkdtempSync(join(tmpdir(), "leafmesh-tls-strangers-"));
  const logLines: string[] = [];
  let server: TlsStreamServer;
  let stranger: NodeIdentity;
  let served = 0;

  beforeAll(async () => {
    await initKeys({ dir: join(base, "keys") });
    await initKeys({ dir: join(base, "other-mesh") });
    await issueNode({ dir: join(base, "keys"), node: "edge-b" });
    // Another mesh's node, named as one of this mesh's.
    await issueNode({ dir: join(base, "other-mesh"), node: "edge-a" });
    stranger = nodeIdentityPems(loadNodeSecurity(join(base, "other-mesh"), "edge-a"));
    const log = createLogger({ level: "info", destination: new Writable({ write: (chunk, _encoding, callback) => (logLines.push(chunk.toString()), callback()) }) });
    server = await startTlsStreamServer({
      identity: nodeIdentityPems(loadNodeSecurity(join(base, "keys"), "edge-b")),
      listen: { host: "127.0.0.1", port: 0 },
      log,
      onStream: (socket) => {
        served++;
        socket.destroy();
      },
    });
  }, 30_000);

  afterAll(async () => {
    await server?.close();
    rmSync(base, { recursive: true, force: true });
  });

  it("refuses a client certificate of another CA, and says it was the certificate", async () => {
    // The stranger does not check the server (as an attacker would not): its own side of the handshake completes.
    for (let attempt = 0; attempt < 3; attempt++) {
      await new Promise<void>((resolve) => {
        const socket = connect({ host: "127.0.0.1", port: server.port, rejectUnauthorized: false, cert: stranger.certPem, key: stranger.keyPem }, () => socket.write("a stream header"));
        socket.on("error", () => undefined);
        socket.on("close", () => resolve());
      });
    }
    await eventually(() => [...server.refused.values()].reduce((sum, count) => sum + count, 0) >= 3, 5_000, "the refusals counted");
    expect(served).toBe(0);
    const reasons = [...server.refused.keys()];
    expect(reasons, JSON.stringify(reasons)).toEqual([expect.stringMatching(/^client certificate not trusted: [A-Z_]+$/)]);
    const said = logLines.filter((line) => line.includes("TLS tunnel connection refused"));
    expect(said).toHaveLength(1);
    expect(said[0]).toContain("client certificate not trusted");
  });
});
