/**
 * A node taken out of a running mesh, and one added: a diagnostic. A Service has endpoints on edge-c and edge-d;
 * edge-c is killed (-9), or revoked (keys revoke) and killed; then rounds of ten connections go through edge-a's
 * cluster-IP listener. Then edge-e starts and is reached by name. Run on 2026-12-06 (keys, direct,relay):
 *
 * - killed only: every connection answered (the proxy tries edge-d when edge-c fails), but one connection in most
 *   rounds took ~3 s, for as long as the run (75 s): edge-c's record stays fresh for its TTL (150 s), each look
 *   retries its path, and the outlier ejection (balance/outlier.ts) lets one connection try it after each ejection.
 * - revoked and killed: every round fast from the first: its record is dropped at once.
 * - edge-e reached by name ~1.3 s after its start.
 *
 *   node lab/live-ops-node-probe.ts <kill|revoke> [direct|relay|direct,relay]
 */
import { createServer } from "node:net";
import { join } from "node:path";
import { startTarget } from "../test/support/fault-targets.ts";
import { sampleService, writeManifest } from "../test/support/manifests.ts";
import { freePort } from "../test/support/ports.ts";
import { proxyListener, runCliOk, startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { connected, echoesThroughSocks, roundTrip } from "../test/support/socks-client.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { log, sleep } from "./live-ops-report.ts";

const [how, ways = "direct,relay"] = process.argv.slice(2);
const echo = await startTarget("echo");
// edge-d's endpoint: the same port on 127.0.0.2.
const second = createServer((socket) => { socket.on("error", () => undefined); socket.on("data", (d) => socket.write(d)); socket.on("end", () => socket.end()); });
await new Promise<void>((resolve) => second.listen(echo.port, "127.0.0.2", resolve));
try {
  const manifests = tempDir();
  writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.40", endpoints: [{ ip: "127.0.0.1", node: "edge-c" }, { ip: "127.0.0.2", node: "edge-d" }], backendPort: echo.port }));
  const keys = join(tempDir(), "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-c", "edge-d", "edge-e"]) await issueNode({ dir: keys, node });
  const hub = await startHubProcess({ name: "hub-1", manifests, keys });
  const socksPort = await freePort();
  const args = ["--tunnel-ways", ways, "--mdns", "off"];
  const [edgeA, edgeC] = await Promise.all([
    startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], keys, extraArgs: [...args, "--socks", `127.0.0.1:${socksPort}`] }),
    startAgentProcess({ node: "edge-c", hubs: [hub.leafUrl], keys, extraArgs: args }),
    startAgentProcess({ node: "edge-d", hubs: [hub.leafUrl], keys, extraArgs: args }),
  ]);
  const listener = await proxyListener(edgeA, "demo/web:http/TCP");
  const once = async () => {
    const socket = await connected(listener);
    socket.on("error", () => undefined);
    const timer = setTimeout(() => socket.destroy(new Error("timeout")), 5_000);
    try { return (await roundTrip(socket, Buffer.from("hello"))).toString() === "hello" ? "ok" : "short"; } catch (e) { return (e as NodeJS.ErrnoException).code ?? (e as Error).message; } finally { clearTimeout(timer); socket.destroy(); }
  };
  for (let i = 0; i < 20; i++) { const r = await once(); if (r === "ok" && i > 4) break; await sleep(500); }
  log("web works");
  if (how === "revoke") log(await runCliOk("keys", "revoke", "--dir", keys, "--node", "edge-c", "--hub", hub.clientUrl));
  await edgeC.kill();
  log("edge-c gone");
  for (let round = 0; round < 12; round++) {
    const results: string[] = [];
    const began = Date.now();
    for (let i = 0; i < 10; i++) results.push(await once());
    const counts: Record<string, number> = {};
    for (const r of results) counts[r] = (counts[r] ?? 0) + 1;
    log(`round ${round}: ${JSON.stringify(counts)} in ${Date.now() - began} ms`);
    await sleep(3_000);
  }
  const started = Date.now();
  await startAgentProcess({ node: "edge-e", hubs: [hub.leafUrl], keys, extraArgs: args, waitReady: false });
  log("edge-e reached by name after", await echoesThroughSocks(socksPort, "edge-e", echo.port, 60_000), "ms (from its start:", Date.now() - started, "ms)");
} finally {
  await stopAllProcesses();
  await echo.close();
  second.close();
}
