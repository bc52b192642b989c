/**
 * Faults on an edge site (three site servers under one hub) during a relayed transfer edge-c → edge-a between
 * two agents of the site: a diagnostic. Run on 2026-12-06:
 *
 * - kill -9 the site server under edge-c: ECONNRESET in 2.4 s; edge-c on another server; a new stream at once.
 * - SIGSTOP the site server under both agents for 30 s: ECONNRESET ~7.5 s in; both moved to another server
 *   (relay choice: "no answer, loss 100%"); a new stream at once after SIGCONT.
 *
 *   node lab/live-ops-site-probe.ts <kill-c-server|stop-c-server|kill-a-server> [seconds]
 */
import type { Socket } from "node:net";
import { startTarget, watchEnding } from "../test/support/fault-targets.ts";
import { writePsk } from "../test/support/manifests.ts";
import { freePort } from "../test/support/ports.ts";
import { hubPorts, siteClusterPorts, startAgentProcess, startHubProcess, startSiteCluster, stopAllProcesses, tempDir, type AgentProcess } from "../test/support/processes.ts";
import { echoesThroughSocks, readAtLeast, socksConnect } from "../test/support/socks-client.ts";
import { awaitEnding, log, natsPid, sayWarnings, sleep, untilWorks } from "./live-ops-report.ts";

const [fault] = process.argv.slice(2);
const hold = Number(process.argv[3] ?? 30) * 1000;

const source = await startTarget("source", { bytes: 64 * 1024 * 1024 * 1024 });
const echo = await startTarget("echo");
try {
  const ports = { hub: await hubPorts(), site: await siteClusterPorts(3) };
  const [, servers] = await Promise.all([
    startHubProcess({ name: "hub-1", ports: ports.hub }),
    startSiteCluster({ site: "site-a", servers: ["site-a-1", "site-a-2", "site-a-3"], upstreams: [`nats://127.0.0.1:${ports.hub.leaf}`], ports: ports.site }),
  ]);
  log("hub and site up");
  const psk = writePsk(tempDir());
  const socksPort = await freePort();
  const tunnelArgs = ["--psk", psk, "--mdns", "off", "--tunnel-ways", "relay", "--upstream-domain", "site-a"];
  const edgeA = await startAgentProcess({ node: "edge-a", hubs: servers.map((s) => s.leafUrl), extraArgs: [...tunnelArgs, "--socks", `127.0.0.1:${socksPort}`] });
  const edgeC = await startAgentProcess({ node: "edge-c", hubs: servers.map((s) => s.leafUrl), extraArgs: tunnelArgs });
  await echoesThroughSocks(socksPort, "edge-c", echo.port, 40_000);
  log("echo works");
  const serverOf = async (agent: AgentProcess) => {
    const url = (await agent.view()).status.links.find((link) => link.direction === "upstream")?.url;
    return servers.find((server) => url?.endsWith(server.leafUrl.replace("nats://", "")));
  };
  const cServer = (await serverOf(edgeC))!;
  const aServer = (await serverOf(edgeA))!;
  log("edge-a on", aServer.name, "edge-c on", cServer.name);
  const client: Socket = await socksConnect(socksPort, "edge-c", source.port);
  client.on("error", () => undefined);
  await readAtLeast(client, 4 * 1024 * 1024, 15_000);
  log("4 MiB read; fault", fault);
  let ended: { how: string; bytes: number } | undefined;
  void watchEnding(client).then((e) => { ended = e; log("client stream:", e.how, (e.bytes / 1048576).toFixed(1), "MiB more"); });
  const victim = fault === "kill-a-server" ? aServer : cServer;
  if (fault === "stop-c-server") { const p = natsPid(victim); process.kill(p, "SIGSTOP"); await sleep(hold); process.kill(p, "SIGCONT"); }
  else await victim.kill();
  log("fault over on", victim.name);
  await awaitEnding(() => ended !== undefined);
  client.destroy();
  await untilWorks("new stream", () => echoesThroughSocks(socksPort, "edge-c", echo.port, 5_000), { tries: 30, sayEvery: 3 });
  log("edge-a on", (await serverOf(edgeA))?.name, "edge-c on", (await serverOf(edgeC))?.name);
  for (const p of [edgeA, edgeC]) {
    const view = await p.view();
    log(p.name, "tunnel", JSON.stringify(view.status.actors.find((a) => a.name === "tunnel")?.detail).slice(0, 200));
    sayWarnings([p], { last: 6, width: 300 });
  }
} finally {
  await stopAllProcesses();
  await source.close();
  await echo.close();
}
