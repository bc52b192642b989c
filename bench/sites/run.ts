/**
 * Sites benchmark (issue 7): two nodes of one edge site whose tunnel may only
 * relay, reaching each other's Service through the proxy. Relayed through their
 * site server, against the same two nodes relayed through a far cloud hub —
 * what EdgeMesh's single far relay gives. The kernel here has no netem, so the
 * distance to the cloud is a small delay proxy on the leaf link (20 ms each
 * way, 40 ms RTT), in front of the hub.
 *
 * Run: `node bench/sites/run.ts` (or `npm run bench -- sites`).
 */
import { readFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { sampleService, writeManifest, writePsk } from "../../test/support/manifests.ts";
import { freePort } from "../../test/support/ports.ts";
import { startDegradingProxy } from "../../test/support/degrading-proxy.ts";
import { startAgentProcess, startHubProcess, startSiteCluster, stopAllProcesses, tempDir, type AgentProcess } from "../../test/support/processes.ts";
import { percentile, ratio, writeTables, type BenchTable } from "../table.ts";

const oneWayDelayMs = Number(process.env.LEAFMESH_BENCH_CLOUD_DELAY_MS ?? 20);
const requests = Number(process.env.LEAFMESH_BENCH_REQUESTS ?? 200);
const downloadBytes = 16 << 20;


async function proxyPort(agent: AgentProcess): Promise<{ host: string; port: number }> {
  for (let attempt = 0; attempt < 300; attempt++) {
    const traffic = (await agent.view().catch(() => undefined))?.status.actors.find((actor) => actor.name === "traffic");
    const listener = ((traffic?.detail?.listeners ?? []) as { key: string; listenerHost?: string; listenerPort: number }[]).find((candidate) => candidate.key.startsWith("demo/big"));
    if (listener) return { host: listener.listenerHost ?? "127.0.0.1", port: listener.listenerPort };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no proxy listener on ${agent.name}`);
}

async function measure(listener: { host: string; port: number }): Promise<{ p50: number; p99: number; mbps: number }> {
  const fetchText = async (path: string) => (await fetch(`http://${listener.host}:${listener.port}${path}`)).arrayBuffer();
  for (let warm = 0; warm < 60; warm++) {
    try {
      await fetchText("/small");
      break;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
  const latencies: number[] = [];
  for (let request = 0; request < requests; request++) {
    const started = performance.now();
    await fetchText("/small");
    latencies.push(performance.now() - started);
  }
  const started = performance.now();
  const body = await fetchText("/big");
  const seconds = (performance.now() - started) / 1000;
  if (body.byteLength !== downloadBytes) throw new Error(`download was ${body.byteLength} bytes`);
  return { p50: percentile(latencies, 50), p99: percentile(latencies, 99), mbps: (downloadBytes * 8) / seconds / 1e6 };
}

async function scenario(kind: "site" | "cloud"): Promise<{ p50: number; p99: number; mbps: number }> {
  const big = Buffer.alloc(downloadBytes, 120);
  const backendPort = await freePort();
  const backend = createHttpServer((request, response) => response.end(request.url === "/big" ? big : "ok\n"));
  await new Promise<void>((resolve) => backend.listen(backendPort, "127.0.0.1", resolve));
  const manifests = tempDir();
  writeManifest(manifests, "big.yaml", sampleService({ name: "big", clusterIP: "198.19.0.30", endpoints: [{ ip: "127.0.0.1", node: "node-b" }], backendPort }));
  const hub = await startHubProcess({ name: "hub-1", manifests });
  // A long link to the cloud: every chunk delayed, in order and pipelined (test/support/degrading-proxy.ts).
  const far = await startDegradingProxy(Number(new URL(hub.leafUrl).port));
  far.set({ delayMs: oneWayDelayMs, lossRate: 0 });
  const psk = writePsk(tempDir());
  let upstream = `nats://127.0.0.1:${far.port}`;
  const extra: string[] = [];
  if (kind === "site") {
    const [site] = await startSiteCluster({ site: "site-a", servers: ["site-a-1"], upstreams: [upstream] });
    upstream = site.leafUrl;
    extra.push("--upstream-domain", "site-a");
  }
  const agents = await Promise.all(
    ["node-a", "node-b"].map((node) =>
      startAgentProcess({ node, hubs: [upstream], extraArgs: [...extra, "--psk", psk, "--tunnel-ways", "relay", "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "off"] }),
    ),
  );
  try {
    return await measure(await proxyPort(agents[0]));
  } finally {
    await stopAllProcesses();
    await far.close();
    backend.close();
  }
}

export async function runSitesBench(): Promise<BenchTable> {
  const site = await scenario("site");
  const cloud = await scenario("cloud");
  const round = (value: number) => Math.round(value * 100) / 100;
  return {
    title: `Sites: relayed service traffic between two nodes of one site, through the site server vs through a cloud hub ${2 * oneWayDelayMs} ms away`,
    columns: ["metric", "leafmesh via the site", "via the far cloud (EdgeMesh-like relay)", "site / cloud"],
    rows: [
      [`request latency p50 (ms, ${requests} requests)`, round(site.p50), round(cloud.p50), ratio(site.p50, cloud.p50)],
      [`request latency p99 (ms)`, round(site.p99), round(cloud.p99), ratio(site.p99, cloud.p99)],
      [`throughput, 16 MiB download (Mbit/s)`, round(site.mbps), round(cloud.mbps), ratio(site.mbps, cloud.mbps)],
    ],
    notes: [
      "Both: `leafmesh agent --tunnel-ways relay` on both nodes, a Service whose endpoint is on node-b, requests through node-a's proxy listener; relayed bytes are end-to-end encrypted (noise) over NATS subjects.",
      `The cloud hub sits behind a delay proxy (${oneWayDelayMs} ms each way) on its leaf link; the site server reaches the hub through the same proxy, so only the relay's path differs.`,
    ],
  };
}

if (import.meta.main) {
  const table = await runSitesBench();
  const written = writeTables("sites", [table]);
  console.log(readFileSync(written.markdown, "utf8"));
  process.exit(0);
}
