/**
 * Faults on a cluster of three hubs during a relayed transfer edge-c → edge-a (edge-a listed hub-1 and hub-3,
 * edge-c hub-2 and hub-3): a diagnostic. It finds which hub each agent's leaf uses (its relay subscriptions in
 * /leafz) and which holds the publisher lease, kills or freezes one, and reports how the client's stream ended,
 * how soon a new stream works and how soon a new Service reaches edge-a. Run on 2026-12-06:
 *
 * - kill -9 the hub under edge-c (it also held the lease): ECONNRESET in 2.4 s; a new stream 0.1 s later; the
 *   lease moved; a new Service reached edge-a in ~10 s.
 * - kill -9 the lease holder (no agent on it): the transfer went on (163 MiB more) until the agents' relay
 *   choice moved their links, then ECONNRESET; a new stream at once; a new Service in 0.5 s.
 * - SIGSTOP the nats-server under edge-c for 30 s: ECONNRESET ~7 s in, edge-c moved to another hub; a new
 *   stream at once after SIGCONT; the lease moved (the frozen server led the KV stream) and a new Service took
 *   16 s after SIGCONT.
 *
 *   node lab/live-ops-cluster-probe.ts <kill-c-hub|kill-lease|stop-c-hub|kill-a-hub> [seconds]
 */
import { execFileSync } from "node:child_process";
import type { Socket } from "node:net";
import { startTarget, watchEnding } from "../test/support/fault-targets.ts";
import { sampleService, writeManifest, writePsk } from "../test/support/manifests.ts";
import { freePort } from "../test/support/ports.ts";
import { startAgentProcess, startHubCluster, stopAllProcesses, tempDir, type HubProcess } from "../test/support/processes.ts";
import { echoesThroughSocks, readAtLeast, socksConnect } from "../test/support/socks-client.ts";
import { awaitEnding, log, natsPid, sayWarnings, sleep, untilWorks } from "./live-ops-report.ts";

const [fault] = process.argv.slice(2);
const hold = Number(process.argv[3] ?? 30) * 1000;
const leafz = (hub: HubProcess): string => { try { return execFileSync("curl", ["-s", "-m", "2", `http://127.0.0.1:${(hub as unknown as { monitorPort: number }).monitorPort}/leafz?subs=1`], { encoding: "utf8" }); } catch { return ""; } };

const source = await startTarget("source", { bytes: 64 * 1024 * 1024 * 1024 });
const echo = await startTarget("echo");
try {
  const manifests = tempDir();
  writeManifest(manifests, "echo.yaml", sampleService({ name: "echo", clusterIP: "198.19.0.30", endpoints: [{ ip: "127.0.0.1", node: "edge-c" }], backendPort: echo.port }));
  const hubs = await startHubCluster({ names: ["hub-1", "hub-2", "hub-3"], manifests, leaseTtlMs: 6_000 });
  log("hubs up");
  const psk = writePsk(tempDir());
  const socksPort = await freePort();
  const tunnelArgs = ["--psk", psk, "--mdns", "off", "--tunnel-ways", "relay"];
  const edgeA = await startAgentProcess({ node: "edge-a", hubs: [hubs[0].leafUrl, hubs[2].leafUrl], extraArgs: [...tunnelArgs, "--socks", `127.0.0.1:${socksPort}`] });
  const edgeC = await startAgentProcess({ node: "edge-c", hubs: [hubs[1].leafUrl, hubs[2].leafUrl], extraArgs: tunnelArgs });
  await echoesThroughSocks(socksPort, "edge-c", echo.port, 30_000);
  await echoesThroughSocks(socksPort, "echo.demo.svc.cluster.local", 80, 30_000);
  log("echo works, by node and by service");
  const holder = async () => { for (const hub of hubs) { try { if ((await hub.view()).status.actors.find((a) => a.name === "publisher")?.state === "leading") return hub; } catch { /* down */ } } return undefined; };
  const lease = await holder();
  const cHub = hubs.find((hub) => /relay\.edge-c\./.test(leafz(hub).replace(/\s/g, "")));
  const aHub = hubs.find((hub) => /relay\.edge-a\./.test(leafz(hub).replace(/\s/g, "")));

  log("lease holder", lease?.name, "edge-c on", cHub?.name, "edge-a on", aHub?.name);
  const client: Socket = await socksConnect(socksPort, "edge-c", source.port);
  client.on("error", () => undefined);
  await readAtLeast(client, 4 * 1024 * 1024, 15_000);
  log("4 MiB read; fault", fault);
  let ended: { how: string; bytes: number } | undefined;
  void watchEnding(client).then((e) => { ended = e; log("client stream:", e.how, (e.bytes / 1048576).toFixed(1), "MiB more"); });
  const victim = fault === "kill-lease" ? lease! : fault === "kill-a-hub" ? aHub! : cHub!;
  if (fault === "stop-c-hub") { const p = natsPid(victim); process.kill(p, "SIGSTOP"); await sleep(hold); process.kill(p, "SIGCONT"); }
  else await victim.kill();
  log("fault over on", victim.name);
  await awaitEnding(() => ended !== undefined);
  client.destroy();
  await untilWorks("new stream", () => echoesThroughSocks(socksPort, "edge-c", echo.port, 5_000), { tries: 30, sayEvery: 3 });
  writeManifest(manifests, "late.yaml", sampleService({ name: "late", clusterIP: "198.19.0.31", endpoints: [{ ip: "127.0.0.1", node: "edge-c" }], backendPort: echo.port }));
  for (const hub of hubs) if (hub !== victim) writeManifest(manifests, "late.yaml", sampleService({ name: "late", clusterIP: "198.19.0.31", endpoints: [{ ip: "127.0.0.1", node: "edge-c" }], backendPort: echo.port }));
  await untilWorks("a new service at edge-a", () => echoesThroughSocks(socksPort, "late.demo.svc.cluster.local", 80, 3_000), { tries: 40, sayEvery: 5 });
  log("lease now", (await holder())?.name);
  for (const p of [edgeA, edgeC]) {
    const view = await p.view();
    log(p.name, "tunnel", JSON.stringify(view.status.actors.find((a) => a.name === "tunnel")?.detail).slice(0, 300));
    sayWarnings([p], { last: 6, width: 300 });
  }
} finally {
  await stopAllProcesses();
  await source.close();
  await echo.close();
}
