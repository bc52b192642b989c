/**
 * Beside curve (b): what node credentials cost as nodes join, with the key
 * store's own functions (trust/node-credentials.ts issueNode, as `leafmesh keys issue`
 * runs it). Every node has an account that imports relay frames and the punch
 * method from every other node's account (trust/claims.ts nodeAccountJwt), so
 * each join signs every account again and pushes them all to the hubs. Measured
 * at each point: the time to issue the last node (one join), the account JWTs
 * (total and largest), and a secured hub started on those keys (its nats-server's
 * RSS with every account loaded, and how long until it is ready).
 */
import { join } from "node:path";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { allAccountJwts, initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { startHubProcess, stopAllProcesses } from "../../test/support/processes.ts";
import { rssMiB } from "../fabric/process-stats.ts";

export interface KeysPoint {
  nodes: number;
  /** Issuing the last node: one join, every account signed again. */
  lastIssueMs: number;
  /** Issuing all of them, one after the other. */
  allIssuesMs: number;
  accountJwtBytes: number;
  largestAccountJwtBytes: number;
  hubReadyMs: number;
  hubServerRssMiB: number;
}

export async function measureKeysCurve(counts: number[]): Promise<KeysPoint[]> {
  // Not a tempDir(): stopAllProcesses() removes those, and the keys outlive each hub.
  const base = mkdtempSync(join(tmpdir(), "leafmesh-bench-keys-"));
  const dir = join(base, "keys");
  await initKeys({ dir });
  const points: KeysPoint[] = [];
  try {
    let issued = 0;
    let allIssuesMs = 0;
    for (const nodes of [...counts].sort((a, b) => a - b)) {
      console.error(`scale: node credentials for ${nodes} nodes`);
      let lastIssueMs = NaN;
      for (; issued < nodes; issued++) {
        const started = performance.now();
        await issueNode({ dir, node: `sim-${issued}` });
        lastIssueMs = performance.now() - started;
        allIssuesMs += lastIssueMs;
      }
      const jwts = allAccountJwts(dir);
      const hubStarted = performance.now();
      try {
        const hub = await startHubProcess({ name: "hub-keys", keys: dir });
        const hubReadyMs = performance.now() - hubStarted;
        const serverPid = Number(readFileSync(join(hub.dataDir, "nats-server.pid"), "utf8"));
        points.push({
          nodes, lastIssueMs, allIssuesMs,
          accountJwtBytes: jwts.reduce((total, entry) => total + entry.jwt.length, 0),
          largestAccountJwtBytes: Math.max(...jwts.map((entry) => entry.jwt.length)),
          hubReadyMs, hubServerRssMiB: rssMiB(serverPid),
        });
      } finally {
        await stopAllProcesses();
      }
    }
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
  return points;
}
