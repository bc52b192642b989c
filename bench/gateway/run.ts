/**
 * Gateway benchmark (issue 19): the leafmesh ingress gateway beside haproxy,
 * both in front of the same backends on one machine, with the same routes.
 *
 * - HTTP: requests/s and latency p50/p99 from `wrk --latency` (keep-alive
 *   clients), the requests rotating over three routes: Host shop.example.com
 *   path prefix /api/ → api, shop.example.com / → web, other.example.com →
 *   web. The gateway is a real `leafmesh agent --gateway` (a hub with the
 *   Gateway API manifests, as the demo and the tests run it); haproxy in HTTP
 *   mode has the same host and path-prefix routes, keep-alive to the backends
 *   (`http-reuse always`), X-Forwarded-For/-Proto set as the gateway sets them,
 *   and one log line per request as the gateway's access log.
 * - TCP: iperf3 throughput through the gateway's TCPRoute and haproxy in TCP
 *   mode, to one iperf3 server.
 * - CPU: the proxy process's user + system time per request and per MiB
 *   (/proc), the gateway's agent process (it holds the other actors too, idle
 *   here) against haproxy's.
 *
 * The backends are local to the gateway node (127.0.0.1): a small C server
 * (backend.c, built here with cc) and iperf3. Each proxy runs one thread
 * (the gateway's JavaScript runs on one; haproxy `nbthread 1`). Rounds are
 * interleaved and medians reported: on a shared machine a burst of other load
 * then hits both alike. Writes bench/results/gateway.{md,json}.
 *
 *   node bench/gateway/run.ts    (needs wrk, haproxy, iperf3, cc, nats-server)
 *   LEAFMESH_BENCH_ROUNDS=5 LEAFMESH_BENCH_SECONDS=5 LEAFMESH_BENCH_CONNECTIONS=32
 *   LEAFMESH_BENCH_PARTS=http or tcp: only that part (to profile one).
 *   LEAFMESH_BENCH_CPU_PROF=DIR: the agent runs with --cpu-prof into DIR (bench/profile/cpu-profile.ts reads it).
 *   LEAFMESH_BENCH_AGENT_NODE_FLAGS="--trace-gc": Node flags for the agent alone.
 *   LEAFMESH_BENCH_AGENT_ARGS="--gateway-access-log off": more `leafmesh agent` flags (to see what one part costs).
 *   LEAFMESH_BENCH_KEEP=1: keep the scratch directory (agent.log, haproxy.log, configuration).
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { writeManifest } from "../../test/support/manifests.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { cliPath, nodeBinary, startHubProcess, stopAllProcesses } from "../../test/support/processes.ts";
import { cpuMs } from "../fabric/process-stats.ts";
import { percentile, ratio, writeTables, type BenchTable } from "../table.ts";

const namespace = "bench";
/** The requests wrk rotates over: [Host, path, the backend that must answer]. */
const requests: [string, string, string][] = [
  ["shop.example.com", "/api/orders", "api"],
  ["shop.example.com", "/", "web"],
  ["other.example.com", "/index.html", "web"],
];

interface Ports {
  api: number;
  web: number;
  iperf: number;
  gatewayHttp: number;
  gatewayTcp: number;
  haproxyHttp: number;
  haproxyTcp: number;
  bareNodeHttp: number;
  bareLlhttp: number;
}

interface HttpSample {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  cpuUsPerRequest: number;
  /** The kernel's share of that CPU (system time: the sockets' syscalls, loopback TCP). */
  systemShare: number;
}

/** User and system CPU time of a process so far, in ms (proc(5) fields 14 and 15, 10 ms ticks). */
function cpuSplit(pid: number | undefined): { user: number; system: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return { user: Number(fields[11]) * 10, system: Number(fields[12]) * 10 };
}

interface TcpSample {
  gbits: number;
  cpuMsPerMiB: number;
}

/** Services, slices and Gateway API routes: the same routes haproxy gets in haproxyConfig. */
function manifests(ports: Ports): object[] {
  const service = (name: string, port: number, index: number) => [
    { apiVersion: "v1", kind: "Service", metadata: { name, namespace }, spec: { clusterIP: `198.19.88.${index + 1}`, ports: [{ name: "main", port: 80, protocol: "TCP" }] } },
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: `${name}-0`, namespace, labels: { "kubernetes.io/service-name": name } },
      addressType: "IPv4",
      endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true } }],
      ports: [{ name: "main", port, protocol: "TCP" }],
    },
  ];
  const parentRefs = (section: string) => [{ name: "edge", sectionName: section }];
  return [
    ...service("api", ports.api, 0),
    ...service("web", ports.web, 1),
    ...service("iperf", ports.iperf, 2),
    {
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: { name: "edge", namespace },
      spec: {
        gatewayClassName: "leafmesh",
        listeners: [
          { name: "http", port: ports.gatewayHttp, protocol: "HTTP" },
          { name: "tcp", port: ports.gatewayTcp, protocol: "TCP" },
        ],
      },
    },
    {
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "HTTPRoute",
      metadata: { name: "shop", namespace },
      spec: {
        parentRefs: parentRefs("http"),
        hostnames: ["shop.example.com"],
        rules: [
          { matches: [{ path: { type: "PathPrefix", value: "/api/" } }], backendRefs: [{ name: "api", port: 80 }] },
          { matches: [{ path: { type: "PathPrefix", value: "/" } }], backendRefs: [{ name: "web", port: 80 }] },
        ],
      },
    },
    {
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "HTTPRoute",
      metadata: { name: "other", namespace },
      spec: { parentRefs: parentRefs("http"), hostnames: ["other.example.com"], rules: [{ backendRefs: [{ name: "web", port: 80 }] }] },
    },
    {
      apiVersion: "gateway.networking.k8s.io/v1alpha2",
      kind: "TCPRoute",
      metadata: { name: "iperf", namespace },
      spec: { parentRefs: parentRefs("tcp"), rules: [{ backendRefs: [{ name: "iperf", port: 80 }] }] },
    },
  ];
}

function haproxyConfig(ports: Ports): string {
  return [
    "global",
    "  nbthread 1", // as the gateway: its JavaScript runs on one thread
    "  maxconn 4000",
    "  log stdout format raw local0", // one line per request, as the gateway's access log
    "defaults",
    "  log global",
    "  timeout connect 5s",
    "  timeout client 60s",
    "  timeout server 60s",
    "frontend http",
    "  mode http",
    "  option httplog",
    `  bind 127.0.0.1:${ports.haproxyHttp}`,
    "  option forwardfor",
    "  http-request set-header X-Forwarded-Proto http",
    "  acl shop req.hdr(host),field(1,:) -i shop.example.com",
    "  acl other req.hdr(host),field(1,:) -i other.example.com",
    "  acl api path /api", // PathPrefix "/api/" by segments: "/api" itself, or "/api/" and below
    "  acl api path_beg /api/",
    "  use_backend api if shop api",
    "  use_backend web if shop",
    "  use_backend web if other",
    "backend api",
    "  mode http",
    "  http-reuse always",
    `  server api 127.0.0.1:${ports.api}`,
    "backend web",
    "  mode http",
    "  http-reuse always",
    `  server web 127.0.0.1:${ports.web}`,
    "listen tcp",
    "  mode tcp",
    "  option tcplog",
    `  bind 127.0.0.1:${ports.haproxyTcp}`,
    `  server iperf 127.0.0.1:${ports.iperf}`,
    "",
  ].join("\n");
}

/** A wrk script that sends the requests in turn, each prepared once. */
function wrkScript(): string {
  const built = requests.map(([host, path]) => `wrk.format("GET", ${JSON.stringify(path)}, { Host = ${JSON.stringify(host)} })`);
  return [
    "local prepared = {}",
    "local next = 0",
    `function init(args) prepared = { ${built.join(", ")} } end`,
    "function request() next = next % #prepared + 1 return prepared[next] end",
    "",
  ].join("\n");
}

/** A duration in wrk's notation (1.23ms, 456.00us, 1.20s, 1.05m) in milliseconds. */
function wrkMs(text: string): number {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!match) {
    console.error(`wrk: a latency not understood: '${text}'`);
    return NaN;
  }
  const value = Number(match[1]);
  return match[2] === "us" ? value / 1000 : match[2] === "ms" ? value : match[2] === "s" ? value * 1000 : value * 60_000;
}

function runWrk(port: number, script: string, seconds: number, connections: number): { requestsPerSecond: number; requests: number; p50Ms: number; p99Ms: number; errors: number } {
  const output = execFileSync("wrk", ["-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "-s", script, `http://127.0.0.1:${port}/`], { encoding: "utf8", timeout: (seconds + 30) * 1000 });
  const requestsPerSecond = Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1]);
  const total = Number(/(\d+) requests in/.exec(output)?.[1]);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const socketErrors = socket ? socket.slice(1).reduce((sum, value) => sum + Number(value), 0) : 0;
  return {
    requestsPerSecond,
    requests: total,
    // Lines of the Latency Distribution only ("     99%    5.67ms"): a +/- Stdev column such as "71.99%" also ends in a percent.
    p50Ms: wrkMs(/^\s+50%\s+(\S+)$/m.exec(output)?.[1] ?? ""),
    p99Ms: wrkMs(/^\s+99%\s+(\S+)$/m.exec(output)?.[1] ?? ""),
    errors: non2xx + socketErrors,
  };
}

function runIperf(port: number, seconds: number): { gbits: number; mib: number } {
  const output = JSON.parse(execFileSync("iperf3", ["-J", "-c", "127.0.0.1", "-p", String(port), "-t", String(seconds)], { encoding: "utf8", timeout: (seconds + 30) * 1000 }));
  return { gbits: output.end.sum_received.bits_per_second / 1e9, mib: output.end.sum_received.bytes / 2 ** 20 };
}

function get(port: number, host: string, path: string): string {
  try {
    return execFileSync("curl", ["-s", "--max-time", "2", "-H", `Host: ${host}`, `http://127.0.0.1:${port}${path}`], { encoding: "utf8" });
  } catch {
    return "";
  }
}

function waitForLine(child: ChildProcess, line: string, what: string): Promise<void> {
  return new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`timed out waiting for ${what}`)), 20_000);
    createInterface({ input: child.stdout! }).on("line", (text) => {
      if (text === line) {
        clearTimeout(timer);
        done();
      }
    });
    child.once("exit", (code) => fail(new Error(`${what} exited with ${code}`)));
  });
}

export async function runGatewayBench(): Promise<BenchTable[]> {
  for (const tool of ["wrk", "haproxy", "iperf3", "cc", "curl"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`]);
    } catch {
      throw new Error(`${tool} is not installed (apt-get install -y ${tool === "cc" ? "gcc" : tool})`);
    }
  }
  const rounds = Number(process.env.LEAFMESH_BENCH_ROUNDS ?? 3);
  const seconds = Number(process.env.LEAFMESH_BENCH_SECONDS ?? 5);
  const connections = Number(process.env.LEAFMESH_BENCH_CONNECTIONS ?? 32);
  const iperfSeconds = 3;
  const parts = (process.env.LEAFMESH_BENCH_PARTS ?? "http,tcp").split(",");
  const scratch = mkdtempSync(join(tmpdir(), "leafmesh-gwbench-"));
  const children: ChildProcess[] = [];
  const load = [loadavg()[0]];
  try {
    const backendBinary = join(scratch, "backend");
    execFileSync("cc", ["-O2", "-o", backendBinary, resolve(import.meta.dirname, "backend.c")]);
    const ports: Ports = {
      api: await freePort(),
      web: await freePort(),
      iperf: await freePort(),
      gatewayHttp: await freePort(),
      gatewayTcp: await freePort(),
      haproxyHttp: await freePort(),
      haproxyTcp: await freePort(),
      bareNodeHttp: await freePort(),
      bareLlhttp: await freePort(),
    };
    const backend = spawn(backendBinary, [`api:${ports.api}`, `web:${ports.web}`], { stdio: ["ignore", "pipe", "inherit"] });
    children.push(backend);
    await waitForLine(backend, "listening", "the backend");
    children.push(spawn("iperf3", ["-s", "-p", String(ports.iperf)], { stdio: "ignore" }));

    const manifestDir = join(scratch, "manifests");
    writeManifest(manifestDir, "gateway.yaml", manifests(ports));
    const hub = await startHubProcess({ name: "hub-1", manifests: manifestDir });
    const agentLog = openSync(join(scratch, "agent.log"), "w");
    const profileDir = process.env.LEAFMESH_BENCH_CPU_PROF;
    const agentPorts = { client: await freePort(), monitor: await freePort() };
    // Spawned here rather than with launch(): its access log (a line a request) goes to a file, not into this process's memory.
    const agent = spawn(
      nodeBinary,
      [
        ...(profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : []),
        ...(process.env.LEAFMESH_BENCH_AGENT_NODE_FLAGS ?? "").split(" ").filter(Boolean),
        cliPath, "agent", "--node", "edge-a", "--hub", hub.leafUrl, "--data", join(scratch, "edge-a"),
        "--nats-listen", `127.0.0.1:${agentPorts.client}`, "--monitor-listen", `127.0.0.1:${agentPorts.monitor}`, "--metrics-listen", "off",
        "--insecure", "--mdns", "off", "--gateway", "127.0.0.1",
        ...(process.env.LEAFMESH_BENCH_AGENT_ARGS ?? "").split(" ").filter(Boolean),
      ],
      { stdio: ["ignore", agentLog, agentLog] },
    );
    closeSync(agentLog);
    children.push(agent);
    const haproxyFile = join(scratch, "haproxy.cfg");
    writeFileSync(haproxyFile, haproxyConfig(ports));
    const haproxyLog = openSync(join(scratch, "haproxy.log"), "w");
    const haproxy = spawn("haproxy", ["-db", "-f", haproxyFile], { stdio: ["ignore", haproxyLog, haproxyLog] });
    closeSync(haproxyLog);
    children.push(haproxy);

    // The floors: the least a proxy in Node does (bare-proxy.ts), on Node's HTTP server and on llhttp directly.
    const bare = (mode: "node-http" | "llhttp", port: number) => {
      const child = spawn(nodeBinary, [resolve(import.meta.dirname, "bare-proxy.ts"), mode, String(port), String(ports.api), String(ports.web)], { stdio: ["ignore", "pipe", "inherit"] });
      children.push(child);
      return child;
    };
    const bareNodeHttp = bare("node-http", ports.bareNodeHttp);
    const bareLlhttp = bare("llhttp", ports.bareLlhttp);
    await waitForLine(bareNodeHttp, "listening", "the bare proxy on Node's HTTP server");
    await waitForLine(bareLlhttp, "listening", "the bare proxy on llhttp");

    // Each answers every route with the right backend before anything is measured.
    for (const [port, log] of [[ports.gatewayHttp, "agent.log"], [ports.haproxyHttp, "haproxy.log"], [ports.bareNodeHttp, ""], [ports.bareLlhttp, ""]] as const) {
      await eventually(() => requests.every(([host, path, expected]) => get(port, host, path) === `${expected}\n`), 60_000, `every route through port ${port}`).catch((error: Error) => {
        throw new Error(log ? `${error.message}\n--- ${log} ---\n${readFileSync(join(scratch, log), "utf8").slice(-3000)}` : error.message);
      });
    }
    const script = join(scratch, "rotate.lua");
    writeFileSync(script, wrkScript());
    // Warm-up (JIT, pools), not counted.
    runWrk(ports.gatewayHttp, script, 2, connections);
    runWrk(ports.haproxyHttp, script, 1, connections);
    runWrk(ports.bareNodeHttp, script, 1, connections);
    runWrk(ports.bareLlhttp, script, 1, connections);
    if (parts.includes("tcp")) for (const port of [ports.gatewayTcp, ports.haproxyTcp]) runIperf(port, 1);

    const targets = [
      { name: "leafmesh gateway", pid: agent.pid, http: ports.gatewayHttp, tcp: ports.gatewayTcp },
      { name: "haproxy", pid: haproxy.pid, http: ports.haproxyHttp, tcp: ports.haproxyTcp },
      { name: "bare node-http", pid: bareNodeHttp.pid, http: ports.bareNodeHttp, tcp: undefined },
      { name: "bare llhttp", pid: bareLlhttp.pid, http: ports.bareLlhttp, tcp: undefined },
    ];
    const http = new Map<string, HttpSample[]>(targets.map((target) => [target.name, []]));
    const tcp = new Map<string, TcpSample[]>(targets.map((target) => [target.name, []]));
    const direct: { requestsPerSecond: number; p99Ms: number; gbits: number }[] = [];
    for (let round = 0; round < rounds; round++) {
      // Alternate which goes first: a burst of other load then falls on each in turn.
      const order = round % 2 === 0 ? targets : [...targets].reverse();
      for (const target of parts.includes("http") ? order : []) {
        const before = cpuSplit(target.pid);
        const result = runWrk(target.http, script, seconds, connections);
        const after = cpuSplit(target.pid);
        const cpu = after.user + after.system - before.user - before.system;
        const systemShare = (after.system - before.system) / cpu;
        http.get(target.name)!.push({ ...result, cpuUsPerRequest: (cpu * 1000) / result.requests, systemShare });
        console.error(`round ${round + 1} ${target.name} http: ${result.requestsPerSecond.toFixed(0)} req/s, p99 ${result.p99Ms} ms, ${((cpu * 1000) / result.requests).toFixed(1)} µs CPU/request (${(systemShare * 100).toFixed(0)} % system), errors ${result.errors}`);
      }
      for (const target of parts.includes("tcp") ? order : []) {
        if (target.tcp === undefined) continue;
        const before = cpuMs(target.pid);
        const result = runIperf(target.tcp, iperfSeconds);
        const cpu = cpuMs(target.pid) - before;
        tcp.get(target.name)!.push({ gbits: result.gbits, cpuMsPerMiB: cpu / result.mib });
        console.error(`round ${round + 1} ${target.name} tcp: ${result.gbits.toFixed(2)} Gbit/s, ${(cpu / result.mib).toFixed(3)} ms CPU/MiB`);
      }
      const backendAlone = runWrk(ports.web, script, 2, connections);
      const iperfAlone = runIperf(ports.iperf, 2);
      direct.push({ requestsPerSecond: backendAlone.requestsPerSecond, p99Ms: backendAlone.p99Ms, gbits: iperfAlone.gbits });
      load.push(loadavg()[0]);
    }

    // A round whose value could not be read (NaN) is left out, not allowed to spoil the median.
    const median = (values: number[]) => percentile(values.filter((value) => Number.isFinite(value)), 50);
    const httpRow = (name: string) => {
      const runs = http.get(name)!;
      return {
        requestsPerSecond: median(runs.map((run) => run.requestsPerSecond)),
        p50Ms: median(runs.map((run) => run.p50Ms)),
        p99Ms: median(runs.map((run) => run.p99Ms)),
        cpuUsPerRequest: median(runs.map((run) => run.cpuUsPerRequest)),
        systemShare: `${(median(runs.map((run) => run.systemShare)) * 100).toFixed(0)} %`,
        errors: runs.reduce((sum, run) => sum + run.errors, 0),
        all: runs.map((run) => Math.round(run.requestsPerSecond)).join(" / "),
      };
    };
    const tcpRow = (name: string) => {
      const runs = tcp.get(name)!;
      return { gbits: median(runs.map((run) => run.gbits)), cpuMsPerMiB: median(runs.map((run) => run.cpuMsPerMiB)), all: runs.map((run) => run.gbits.toFixed(2)).join(" / ") };
    };
    const gatewayHttp = httpRow("leafmesh gateway");
    const haproxyHttp = httpRow("haproxy");
    const gatewayTcp = tcpRow("leafmesh gateway");
    const haproxyTcp = tcpRow("haproxy");
    // Per-round ratios (each round's pair ran back to back): their median is steadier than a ratio of medians under other load.
    const roundRatios = (leafmesh: number[], baseline: number[]) => median(leafmesh.map((value, index) => value / baseline[index]));
    const rps = (name: string) => http.get(name)!.map((run) => run.requestsPerSecond);
    const httpRatio = roundRatios(rps("leafmesh gateway"), rps("haproxy"));
    const bareNodeRow = httpRow("bare node-http");
    const bareLlhttpRow = httpRow("bare llhttp");
    const tcpRatio = roundRatios(tcp.get("leafmesh gateway")!.map((run) => run.gbits), tcp.get("haproxy")!.map((run) => run.gbits));

    const httpTable: BenchTable = {
      title: "Gateway: HTTP through the leafmesh gateway and haproxy (same routes, same backends)",
      columns: ["proxy", "requests/s", "p50 ms", "p99 ms", "CPU µs/request", "of it system", "errors", "requests/s per round"],
      rows: [
        ["leafmesh gateway", gatewayHttp.requestsPerSecond, gatewayHttp.p50Ms, gatewayHttp.p99Ms, gatewayHttp.cpuUsPerRequest, gatewayHttp.systemShare, gatewayHttp.errors, gatewayHttp.all],
        ["haproxy (http mode, nbthread 1)", haproxyHttp.requestsPerSecond, haproxyHttp.p50Ms, haproxyHttp.p99Ms, haproxyHttp.cpuUsPerRequest, haproxyHttp.systemShare, haproxyHttp.errors, haproxyHttp.all],
        ["leafmesh / haproxy", `${httpRatio.toFixed(2)}× (goal ≥ 0.7×)`, ratio(gatewayHttp.p50Ms, haproxyHttp.p50Ms), ratio(gatewayHttp.p99Ms, haproxyHttp.p99Ms), ratio(gatewayHttp.cpuUsPerRequest, haproxyHttp.cpuUsPerRequest), "", "", ""],
        ["backend alone (no proxy)", median(direct.map((run) => run.requestsPerSecond)), "", median(direct.map((run) => run.p99Ms)), "", "", "", ""],
        ["floor: bare proxy on Node's HTTP server", bareNodeRow.requestsPerSecond, bareNodeRow.p50Ms, bareNodeRow.p99Ms, bareNodeRow.cpuUsPerRequest, bareNodeRow.systemShare, bareNodeRow.errors, bareNodeRow.all],
        ["floor: bare proxy on llhttp directly", bareLlhttpRow.requestsPerSecond, bareLlhttpRow.p50Ms, bareLlhttpRow.p99Ms, bareLlhttpRow.cpuUsPerRequest, bareLlhttpRow.systemShare, bareLlhttpRow.errors, bareLlhttpRow.all],
        ["floors / haproxy (Node HTTP server; llhttp)", `${roundRatios(rps("bare node-http"), rps("haproxy")).toFixed(2)}×; ${roundRatios(rps("bare llhttp"), rps("haproxy")).toFixed(2)}×`, "", "", `${ratio(bareNodeRow.cpuUsPerRequest, haproxyHttp.cpuUsPerRequest)}; ${ratio(bareLlhttpRow.cpuUsPerRequest, haproxyHttp.cpuUsPerRequest)}`, "", "", ""],
        ["leafmesh / floor on llhttp (the gateway's front end reads on it)", `${roundRatios(rps("leafmesh gateway"), rps("bare llhttp")).toFixed(2)}×`, "", "", ratio(gatewayHttp.cpuUsPerRequest, bareLlhttpRow.cpuUsPerRequest), "", "", ""],
      ],
      notes: [
        `wrk -t1 -c${connections} -d${seconds}s --latency, keep-alive, requests rotating over 3 routes (host shop.example.com prefix /api/ → api, shop.example.com / → web, other.example.com → web); medians of ${rounds} interleaved rounds, the order alternating; the ratio row is the median of per-round ratios (requests/s: higher is better; latency and CPU: lower is better).`,
        "Backends local to the gateway node (127.0.0.1): one C epoll server (bench/gateway/backend.c) for api and web; the gateway is `leafmesh agent --gateway 127.0.0.1` with Gateway API manifests from a hub; haproxy 1 thread, http-reuse always, option forwardfor, X-Forwarded-Proto, one log line per request (the gateway writes its access log line too).",
        "The floors (bench/gateway/bare-proxy.ts) are the least a proxy in Node does, in the same rounds: the benchmark's routes, kept-alive backend connections, the request head written as one string and the answer read with the gateway's own parser; no balancing, timeouts, retries, access log or metrics. One runs on Node's HTTP server (as the gateway did until its own front end, services/gateway/http1-server.ts); the other drives Node's parser (llhttp) on the socket's handle without request and response objects, as that front end does. A floor below 0.7× haproxy is a ceiling for any gateway written on it.",
        "CPU = user + system time of the proxy's process over the run (/proc, 10 ms ticks), and the system (kernel: syscalls, loopback TCP) part of it; the gateway's is the whole agent process.",
        `Machine: ${process.platform}/${process.arch}, 2 cores shared with other sessions; wrk, the proxy and the backend share them; 1-minute load average ${load.map((value) => value.toFixed(1)).join(" → ")} over the run.`,
      ],
    };
    const tcpTable: BenchTable = {
      title: "Gateway: TCP throughput through the gateway's TCPRoute and haproxy (tcp mode)",
      columns: ["proxy", "iperf3 Gbit/s", "CPU ms/MiB", "Gbit/s per round"],
      rows: [
        ["leafmesh gateway", gatewayTcp.gbits, gatewayTcp.cpuMsPerMiB, gatewayTcp.all],
        ["haproxy (tcp mode, nbthread 1)", haproxyTcp.gbits, haproxyTcp.cpuMsPerMiB, haproxyTcp.all],
        ["leafmesh / haproxy", `${tcpRatio.toFixed(2)}× (goal ≥ 1.0×)`, ratio(gatewayTcp.cpuMsPerMiB, haproxyTcp.cpuMsPerMiB), ""],
        ["iperf3 alone (no proxy)", median(direct.map((run) => run.gbits)), "", ""],
      ],
      notes: [`iperf3 -t ${iperfSeconds}, one stream, client → proxy → iperf3 server, all on 127.0.0.1; medians of ${rounds} interleaved rounds; the ratio row is the median of per-round ratios.`],
    };
    // Only the parts that ran: a part left out would be a table of NaN.
    const tables = [...(parts.includes("http") ? [httpTable] : []), ...(parts.includes("tcp") ? [tcpTable] : [])];
    writeTables("gateway", tables);
    return tables;
  } finally {
    // SIGTERM first: the agent writes its CPU profile on a clean exit.
    for (const child of children.reverse()) if (child.exitCode === null) child.kill("SIGTERM");
    await Promise.all(children.map((child) => (child.exitCode === null && child.signalCode === null ? new Promise((done) => { const timer = setTimeout(() => child.kill("SIGKILL"), 10_000); child.once("exit", () => { clearTimeout(timer); done(undefined); }); }) : undefined)));
    await stopAllProcesses();
    if (process.env.LEAFMESH_BENCH_KEEP) console.error(`kept ${scratch}`);
    else rmSync(scratch, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const tables = await runGatewayBench();
  process.stdout.write(`${JSON.stringify(tables, null, 2)}\n`);
}
