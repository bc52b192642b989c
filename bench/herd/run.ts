/**
 * A herd: many agents arriving at one hub in the same second, as after a power cut at a
 * factory, a shop rolled out with one token, or a hub restarted under every node. Real
 * `leafmesh` processes on loopback (test/support/processes.ts), secured with the mesh's keys as
 * the quick start makes them, a catalog of a few hundred services. For each scenario it
 * measures how long until every agent holds the whole catalog, answers DNS for it and opens a
 * tunnel stream to another agent, the hub's CPU meanwhile, and lists every warning and error the
 * processes logged (counted by message).
 *
 *   node bench/herd/run.ts                       # every scenario, 20 agents, 300 services
 *   LEAFMESH_HERD_AGENTS=15 LEAFMESH_HERD_SCENARIOS=issued,restart node bench/herd/run.ts
 *
 * Scenarios: issued (bundles from `keys issue`, all started at once), token (one `keys token
 * --uses N`, every agent --join-file at once), restart (after issued: kill -9 the hub, start
 * it again, a new service published; until every agent holds it and streams again), site (a
 * site and its member agents started at once, then all of them killed and started at once).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { manyServices, sampleService, writeManifest } from "../../test/support/manifests.ts";
import { freePort } from "../../test/support/ports.ts";
import { runCliOk, startAgentProcess, startHubProcess, siteClusterPorts, startSiteCluster, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, type LeafmeshProcess } from "../../test/support/processes.ts";
import { echoesThroughSocks } from "../../test/support/socks-client.ts";
import { udpQuery } from "../../test/support/dns-servers.ts";
import { startTcpEcho } from "../../test/support/tunnel-fabric.ts";
import { cpuMs } from "../fabric/process-stats.ts";

const agentCount = Number(process.env.LEAFMESH_HERD_AGENTS ?? 20);
const serviceCount = Number(process.env.LEAFMESH_HERD_SERVICES ?? 300);
const scenarios = (process.env.LEAFMESH_HERD_SCENARIOS ?? "issued,restart,token,site").split(",");
const deadlineMs = Number(process.env.LEAFMESH_HERD_DEADLINE_MS ?? 240_000);
/** A directory to write every process's whole output into, per scenario. */
const logDir = process.env.LEAFMESH_HERD_LOGS;

interface Herd {
  agents: AgentProcess[];
  dnsPorts: number[];
  socksPorts: number[];
}

const base = tempDir("leafmesh-herd-");
const keys = join(base, "keys");
const manifests = join(base, "manifests");
const nodes = Array.from({ length: agentCount }, (_, index) => `edge-${index}`);
let echoPort = 0;

function nowS(since: number): string {
  return ((performance.now() - since) / 1000).toFixed(1);
}

/** A leafmesh process + its nats-server, CPU so far (ms). */
function treeCpu(process: LeafmeshProcess): number {
  let children: number[] = [];
  try {
    children = execFileSync("ps", ["-o", "pid=", "--ppid", String(process.child.pid)], { encoding: "utf8" }).trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    children = [];
  }
  return (cpuMs(process.child.pid) || 0) + children.reduce((sum, pid) => sum + (cpuMs(pid) || 0), 0);
}
const hubCpu = treeCpu;
const herdCpu = (herd: Herd) => herd.agents.reduce((sum, agent) => sum + treeCpu(agent), 0);

/** Per agent: when it held `expected` services, answered DNS for `name`, streamed to the next agent. Never throws: an agent that never does is reported. */
async function measure(label: string, herd: Herd, hub: HubProcess, since: number, expected: number, name: string): Promise<void> {
  const cpuBefore = hubCpu(hub);
  const herdCpuBefore = herdCpu(herd);
  const times = { catalog: [] as number[], dns: [] as number[], stream: [] as number[] };
  const missing: string[] = [];
  const deadline = since + deadlineMs;
  await Promise.all(
    herd.agents.map(async (agent, index) => {
      const poll = async (what: keyof typeof times, check: () => Promise<boolean>): Promise<void> => {
        while (performance.now() < deadline) {
          if (await check().catch(() => false)) return void times[what].push(performance.now() - since);
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
        missing.push(`${agent.name}: ${what}`);
      };
      await poll("catalog", async () => (await agent.view()).services.length >= expected);
      await poll("dns", async () => (await udpQuery(herd.dnsPorts[index], `${name}.demo.svc.cluster.local`, "A", { timeoutMs: 1_000 })).answers?.length === 1);
      const next = herd.agents[(index + 1) % herd.agents.length].name;
      await poll("stream", async () => (await echoesThroughSocks(herd.socksPorts[index], next, echoPort, 5_000).then(() => true)));
    }),
  );
  const row = (values: number[]) => (values.length ? `${(Math.max(...values) / 1000).toFixed(1)} s (median ${(values.sort((a, b) => a - b)[Math.floor(values.length / 2)] / 1000).toFixed(1)} s, ${values.length}/${herd.agents.length})` : `none of ${herd.agents.length}`);
  console.log(`\n## ${label} (N=${herd.agents.length}, ${expected} services)`);
  console.log(`last agent holding the catalog: ${row(times.catalog)}`);
  console.log(`last agent answering DNS:        ${row(times.dns)}`);
  console.log(`last agent streaming to another: ${row(times.stream)}`);
  console.log(`CPU while measuring, ${nowS(since)} s: hub (+ its nats-server) ${hubCpu(hub) - cpuBefore} ms, the agents (+ theirs) ${herdCpu(herd) - herdCpuBefore} ms; load ${execFileSync("cat", ["/proc/loadavg"], { encoding: "utf8" }).trim()}`);
  if (missing.length) console.log(`NEVER: ${missing.join(", ")}`);
}

/** Warnings and errors (pino level ≥ 40, or nats-server [WRN]/[ERR]) of the processes, counted by message. */
function logReport(processes: LeafmeshProcess[], from: Map<LeafmeshProcess, number>, scenario = "run"): void {
  if (logDir) {
    mkdirSync(join(logDir, scenario), { recursive: true });
    for (const process of processes) writeFileSync(join(logDir, scenario, `${process.name}.log`), process.output());
  }
  const counts = new Map<string, { count: number; who: Set<string> }>();
  for (const process of processes) {
    const text = process.output().slice(from.get(process) ?? 0);
    for (const line of text.split("\n")) {
      let key: string | undefined;
      if (line.startsWith("{")) {
        try {
          const entry = JSON.parse(line) as { level: number; msg: string; actor?: string; err?: { message?: string } };
          if (entry.level >= 40) key = `${entry.level === 40 ? "WARN" : "ERROR"} ${entry.actor ?? ""}: ${entry.msg}${entry.err?.message ? ` — ${entry.err.message}` : ""}`;
        } catch {
          key = undefined;
        }
      } else if (/\[(WRN|ERR)\]/.test(line)) key = line.replace(/^.*?\[(WRN|ERR)\]/, "nats $1").replace(/\d+\.\d+\.\d+\.\d+:\d+/g, "ADDR").replace(/cid:\d+/g, "cid:N");
      if (!key) continue;
      key = key.replace(/edge-\d+/g, "edge-N").replace(/\d+(\.\d+)? ?(ms|s)\b/g, "T$2").slice(0, 300);
      const seen = counts.get(key) ?? { count: 0, who: new Set() };
      seen.count++;
      seen.who.add(process.name.replace(/edge-\d+/, "edge-N"));
      counts.set(key, seen);
    }
    from.set(process, process.output().length);
  }
  const rows = [...counts].sort((a, b) => b[1].count - a[1].count);
  console.log(rows.length ? "warnings and errors:" : "warnings and errors: none");
  for (const [key, { count, who }] of rows) console.log(`  ${String(count).padStart(4)} × [${[...who].join(",")}] ${key}`);
}

/** Scrapes the hub's /metrics every second (prom-client resets the event-loop histogram at each scrape): the longest stall seen. */
function watchHubLoop(hub: HubProcess): { stop(): number } {
  let worst = 0;
  const timer = setInterval(() => {
    void fetch(`${hub.metricsUrl}/metrics`)
      .then((response) => response.text())
      .then((text) => {
        const match = /^\S*eventloop_lag_max_seconds(?:\{[^}]*\})? (\S+)$/m.exec(text);
        if (match) worst = Math.max(worst, Number(match[1]));
      })
      .catch(() => undefined);
  }, 1_000);
  return {
    stop: () => {
      clearInterval(timer);
      return worst;
    },
  };
}

async function startHerd(hub: HubProcess, identity: (node: string) => { keys?: string; joinFile?: string }, upstream = hub.leafUrl.replace("nats://", "tls://"), extra: string[] = []): Promise<Herd> {
  const dnsPorts = await Promise.all(nodes.map(() => freePort()));
  const socksPorts = await Promise.all(nodes.map(() => freePort()));
  const agents = await Promise.all(
    nodes.map((node, index) =>
      startAgentProcess({ node, hubs: [upstream], ...identity(node), waitReady: false, extraArgs: ["--mdns", "off", "--dns", `127.0.0.1:${dnsPorts[index]}`, "--upstream", "127.0.0.1:9", "--socks", `127.0.0.1:${socksPorts[index]}`, ...extra] }),
    ),
  );
  return { agents, dnsPorts, socksPorts };
}

async function main(): Promise<void> {
  console.log(`herd: ${agentCount} agents, ${serviceCount} services, load ${execFileSync("cat", ["/proc/loadavg"], { encoding: "utf8" }).trim()}`);
  writeManifest(manifests, "many.yaml", manyServices(serviceCount));
  await runCliOk("keys", "init", "--dir", keys);
  const issuing = performance.now();
  for (const node of nodes) await runCliOk("keys", "issue", "--dir", keys, "--node", node);
  console.log(`issued ${agentCount} bundles one by one in ${nowS(issuing)} s`);
  const echo = await startTcpEcho();
  echoPort = echo.port;
  // LEAFMESH_HERD_HUB_PROFILE=DIR: the hub process writes a CPU profile there when it stops (node --cpu-prof).
  const profile = process.env.LEAFMESH_HERD_HUB_PROFILE;
  let hub = await startHubProcess({ name: "hub-1", manifests, keys, extraArgs: ["--enrol"], ...(profile ? { env: { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profile}` } } : {}) });
  const logFrom = new Map<LeafmeshProcess, number>();

  if (scenarios.includes("issued") || scenarios.includes("restart")) {
    const start = performance.now();
    const herd = await startHerd(hub, (node) => ({ keys: join(keys, "nodes", node) }));
    await measure("issued bundles, all started at once", herd, hub, start, serviceCount, "svc-0");
    logReport([hub, ...herd.agents], logFrom, "issued");
    if (scenarios.includes("restart")) {
      await hub.kill();
      const restart = performance.now();
      hub = await hub.restart();
      console.log(`hub answered status again after ${nowS(restart)} s`);
      writeManifest(manifests, "after.yaml", sampleService({ name: "after-restart", clusterIP: "198.19.200.1" }));
      await measure("hub kill -9 and restart under every agent, one service added", herd, hub, restart, serviceCount + 1, "after-restart");
      logReport([hub, ...herd.agents], logFrom, "restart");
    }
    await Promise.all(herd.agents.map((agent) => agent.stop()));
    logReport(herd.agents, logFrom, "stop");
  }

  if (scenarios.includes("token")) {
    const clientPort = new URL(hub.clientUrl).port;
    const token = (await runCliOk("keys", "token", "--dir", keys, "--url", `tls://127.0.0.1:${clientPort}`, "--uses", String(agentCount))).trim();
    const tokenFile = join(base, "token");
    writeFileSync(tokenFile, token, { mode: 0o600 });
    for (let index = 0; index < nodes.length; index++) nodes[index] = `join-${index}`;
    const start = performance.now();
    const hubCpuBefore = hubCpu(hub);
    const loop = watchHubLoop(hub);
    const herd = await startHerd(hub, () => ({ joinFile: tokenFile }));
    await measure("one token, every agent joining at once", herd, hub, start, serviceCount + (scenarios.includes("restart") ? 1 : 0), "svc-0");
    console.log(`hub CPU since the joins began: ${hubCpu(hub) - hubCpuBefore} ms; the hub process's longest event-loop stall: ${Math.round(loop.stop() * 1000)} ms`);
    logReport([hub, ...herd.agents], logFrom, "token");
    await Promise.all(herd.agents.map((agent) => agent.stop()));
  }

  if (scenarios.includes("site")) {
    for (let index = 0; index < nodes.length; index++) nodes[index] = `member-${index}`;
    for (const node of nodes) await runCliOk("keys", "issue", "--dir", keys, "--node", node, "--hub", hub.clientUrl.replace("nats://", "tls://"));
    await runCliOk("keys", "issue-site", "--dir", keys, "--site", "shop", "--members", nodes.join(","), "--hub", hub.clientUrl.replace("nats://", "tls://"));
    const [ports] = await siteClusterPorts(1);
    const siteUrl = `tls://127.0.0.1:${ports.leaf}`;
    const start = performance.now();
    const [[site], herd] = await Promise.all([startSiteCluster({ site: "shop", servers: ["shop"], upstreams: [hub.leafUrl], ports: [ports], keys }), startHerd(hub, (node) => ({ keys: join(keys, "nodes", node) }), siteUrl, ["--upstream-domain", "shop"])]);
    const expected = serviceCount + (scenarios.includes("restart") ? 1 : 0);
    await measure("a site and its members started at once", herd, hub, start, expected, "svc-0");
    logReport([hub, site, ...herd.agents], logFrom, "site");
    // The power comes back: the site server and every member killed, all started again in the same instant.
    await Promise.all([site.kill(), ...herd.agents.map((agent) => agent.kill())]);
    writeManifest(manifests, "site-after.yaml", sampleService({ name: "after-power-cut", clusterIP: "198.19.200.2" }));
    const again = performance.now();
    const [siteAgain, ...agentsAgain] = await Promise.all([site.restart(), ...herd.agents.map((agent) => agent.restart())]);
    herd.agents = agentsAgain;
    await measure("site and members kill -9, all started again at once, one service added", herd, hub, again, expected + 1, "after-power-cut");
    logReport([hub, siteAgain, ...herd.agents], logFrom, "site-restart");
  }
  await stopAllProcesses();
  // The echo server was the one handle left: the bench printed its results and then never exited.
  await echo.close();
}

main().catch(async (error) => {
  console.error(error);
  await stopAllProcesses();
  process.exit(1);
});
