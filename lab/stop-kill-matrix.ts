/**
 * How a client's stream ends when an agent under it stops or dies mid-transfer, for each way in: a
 * diagnostic, not a test (test/crash-mid-stream.test.ts holds the rows that matter). Run again on the
 * evening of 2026-12-05 (32 rows), after end frames (lib/end-frames.ts): every SIGTERM row and every
 * row of edge-c killed read ECONNRESET, in every mode. One kind of row reads a clean end:
 * - edge-a killed, the agent the client is connected to: the kernel closes a dead process's sockets
 *   with a FIN. Only SO_LINGER 0, set ahead of time, would make it a reset, and Node does not expose it.
 *   (With keys on a direct path, the target behind edge-c is reset: edge-c reads no end frame;
 *   test/crash-mid-stream.test.ts.)
 * Before end frames, edge-c killed under a direct TLS stream read a clean end too: Node's TLS reports a
 * FIN without close_notify as an end, and edge-a passed it on as a half-close.
 *
 * Real processes on loopback: a hub, edge-a (the client's side: its cluster-IP listener and SOCKS) and
 * edge-c (the far side), a 256 MiB source behind the Service's endpoint, 1 MiB read before the cut.
 *
 *   node lab/stop-kill-matrix.ts                    every row (~13 minutes)
 *   node lab/stop-kill-matrix.ts keys direct far c kill listener   one row: trust (psk|keys), ways (direct|relay),
 *                                                   backend (far|local), who stops (a|c), how (term|kill), way in (listener|socks)
 */
import { join } from "node:path";
import { startTarget, watchEnding } from "../test/support/fault-targets.ts";
import { sampleService, writeManifest, writePsk } from "../test/support/manifests.ts";
import { freePort } from "../test/support/ports.ts";
import { proxyListener, startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { connected, readAtLeast, socksConnect } from "../test/support/socks-client.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";

interface Row {
  trust: "psk" | "keys";
  ways: "direct" | "relay";
  backend: "far" | "local";
  stop: "a" | "c";
  how: "term" | "kill";
  via: "listener" | "socks";
}

async function run(row: Row): Promise<string> {
  const source = await startTarget("source", { bytes: 256 * 1024 * 1024 });
  try {
    const manifests = tempDir();
    writeManifest(manifests, "bulk.yaml", sampleService({ name: "bulk", clusterIP: "198.19.0.20", endpoints: [{ ip: "127.0.0.1", node: row.backend === "far" ? "edge-c" : "edge-a" }], backendPort: source.port }));
    const keys = row.trust === "keys" ? join(tempDir(), "keys") : undefined;
    if (keys) {
      await initKeys({ dir: keys });
      for (const node of ["edge-a", "edge-c"]) await issueNode({ dir: keys, node });
    }
    const common = ["--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "off", ...(row.ways === "relay" ? ["--tunnel-ways", "relay"] : [])];
    const tunnelArgs = keys ? [...common, "--tunnel-tls", "127.0.0.1:0"] : [...common, "--psk", writePsk(tempDir())];
    const hub = await startHubProcess({ name: "hub-1", manifests, keys });
    const socksPort = await freePort();
    const edgeA = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], keys, extraArgs: [...tunnelArgs, "--socks", `127.0.0.1:${socksPort}`] });
    const edgeC = await startAgentProcess({ node: "edge-c", hubs: [hub.leafUrl], keys, extraArgs: tunnelArgs });
    let client;
    for (let attempt = 0; ; attempt++) {
      try {
        client = row.via === "socks" ? await socksConnect(socksPort, "bulk.demo.svc.cluster.local", 80) : await connected(await proxyListener(edgeA, "demo/bulk:http/TCP"));
        client.on("error", () => undefined);
        const head = await readAtLeast(client, 1024 * 1024, 10_000);
        const victim = row.stop === "c" ? edgeC : edgeA;
        const ending = watchEnding(client);
        if (row.how === "kill") await victim.kill();
        else await victim.stop();
        const result = await ending;
        return `${result.how} after ${((head.length + result.bytes) / 1048576).toFixed(1)} MiB`;
      } catch (error) {
        client?.destroy();
        if (attempt >= 5) return `no transfer under way: ${(error as Error).message}`;
        await new Promise((resolve) => setTimeout(resolve, 2_000));
      }
    }
  } finally {
    await stopAllProcesses();
    await source.close();
  }
}

const rows: Row[] = [];
const args = process.argv.slice(2);
if (args.length === 6) rows.push({ trust: args[0], ways: args[1], backend: args[2], stop: args[3], how: args[4], via: args[5] } as Row);
else {
  for (const trust of ["psk", "keys"] as const)
    for (const ways of ["direct", "relay"] as const)
      for (const via of ["listener", "socks"] as const)
        for (const stop of ["a", "c"] as const)
          for (const how of ["term", "kill"] as const) rows.push({ trust, ways, backend: "far", stop, how, via });
}
console.log("| trust | ways | backend | stopped | how | way in | the client's stream |\n|---|---|---|---|---|---|---|");
for (const row of rows) console.log(`| ${row.trust} | ${row.ways} | ${row.backend} | edge-${row.stop} | ${row.how} | ${row.via} | ${await run(row)} |`);
