/**
 * An agent out of file descriptors: a real agent process under `prlimit --nofile=200` (a low `ulimit -n`, as a
 * systemd unit or a container may set) faces 600 concurrent clients on its cluster-IP proxy, its SOCKS proxy and
 * its ingress gateway, whose one endpoint is healthy. The agent lives through it, refuses what it cannot carry,
 * holds its own shortage (EMFILE) against no endpoint, and serves each way again once the clients are gone.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { readdirSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCommand } from "../lib/command.ts";
import { backendManifests, certificateSecrets, ingressManifests } from "./support/gateway-manifests.ts";
import { writeManifest } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { nodeBinary, proxyListener, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess } from "./support/processes.ts";
import { socksConnect } from "./support/socks-client.ts";

const clients = 600;
const descriptorLimit = 200;

let echo: ChildProcess;
let agent: AgentProcess;
let socksPort = 0;
const ingress = { http: 0, https: 0, tls: 0, tcp: 0 };

/** One client: opens, sends a byte, waits for its echo (or the agent's refusal), holds the connection `holdMs`, closes. */
async function client(open: () => Promise<Socket>, holdMs: number): Promise<"echo" | "refused"> {
  let socket: Socket | undefined;
  try {
    socket = await open();
    const opened = socket;
    const outcome = await new Promise<"echo" | "refused">((resolve) => {
      const timer = setTimeout(() => resolve("refused"), 30_000);
      const settle = (result: "echo" | "refused") => {
        clearTimeout(timer);
        resolve(result);
      };
      opened.once("data", () => settle("echo"));
      opened.once("error", () => settle("refused"));
      opened.once("close", () => settle("refused"));
      opened.resume();
      opened.write("x");
    });
    await new Promise((resolve) => setTimeout(resolve, holdMs));
    return outcome;
  } catch {
    return "refused";
  } finally {
    socket?.destroy();
  }
}

const tcp = (target: { host: string; port: number }) => () =>
  new Promise<Socket>((resolve, reject) => {
    const socket = connect(target);
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });

const actorDetail = async (name: string) => ((await agent.view()).status.actors.find((actor) => actor.name === name)?.detail ?? {}) as { counters?: Record<string, number> };

beforeAll(async () => {
  const prlimit = await runCommand(["sh", "-c", "command -v prlimit"]);
  if (prlimit.code !== 0) throw new Error("this test needs prlimit (apt-get install -y util-linux) to lower a running agent's descriptor limit");
  const echoPort = await freePort();
  // TCP and UDP echo on one port number.
  const echoSource = `const udp = require("node:dgram").createSocket("udp4"); udp.on("message", (m, r) => udp.send(m, r.port, r.address)).bind(${echoPort}, "127.0.0.1");
    require("node:net").createServer((s) => { s.on("error", () => {}); s.pipe(s); }).listen(${echoPort}, "127.0.0.1", () => console.log("ready"))`;
  echo = spawn(nodeBinary, ["-e", echoSource], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise((resolve) => echo.stdout!.once("data", resolve));
  for (const key of Object.keys(ingress) as (keyof typeof ingress)[]) ingress[key] = await freePort();
  const manifests = tempDir();
  writeManifest(manifests, "all.yaml", [...ingressManifests("istio", { ports: ingress }), ...backendManifests({ echo: [{ ip: "127.0.0.1", port: echoPort, node: "edge-a" }] }), ...certificateSecrets(), ...udpEcho(echoPort)]);
  const hub = await startHubProcess({ name: "hub-1", manifests });
  socksPort = await freePort();
  agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], extraArgs: ["--socks", `127.0.0.1:${socksPort}`, "--gateway", "127.0.0.1", "--mdns", "off"] });
  await proxyListener(agent, "shop/echo:main/TCP");
  // The gateway's ports open once its plan is made: listening before the limit is lowered, not during another way's burst.
  await eventually(async () => {
    const listeners = ((await actorDetail("gateway")) as { listeners?: { state: string }[] }).listeners ?? [];
    return listeners.length === Object.keys(ingress).length && listeners.every((listener) => listener.state === "listening");
  }, 60_000, "the gateway listening on its ports");
  // Lowered once it runs: its nats-server, started already, keeps its own limit (the agent's process is under test).
  const lowered = await runCommand(["prlimit", "--pid", String(agent.child.pid), `--nofile=${descriptorLimit}:${descriptorLimit}`]);
  if (lowered.code !== 0) throw new Error(`prlimit failed: ${lowered.stderr}`);
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
  echo?.kill();
});

describe(`an agent limited to ${descriptorLimit} descriptors, ${clients} clients at once`, () => {
  it.each(["proxy", "socks", "gateway"] as const)("%s: lives through it, carries some, refuses the rest, and serves again once the clients are gone", { timeout: 120_000 }, async (way) => {
    const open =
      way === "proxy" ? tcp(await proxyListener(agent, "shop/echo:main/TCP")) : way === "socks" ? () => socksConnect(socksPort, "echo.shop.svc.cluster.local", 80) : tcp({ host: "127.0.0.1", port: ingress.tcp });
    const outcomes = await Promise.all(Array.from({ length: clients }, () => client(open, 2_000)));
    expect(agent.child.exitCode).toBeNull();
    // Some carried, the rest refused (reset at the door or after accept): never all refused, never all carried past the limit.
    expect(outcomes.filter((outcome) => outcome === "echo").length).toBeGreaterThan(0);
    expect(outcomes.filter((outcome) => outcome === "refused").length).toBeGreaterThan(0);
    // The clients gone (once the agent has seen them go: until then they count against the client's limit), each way serves again.
    await eventually(async () => (await Promise.all(Array.from({ length: 5 }, () => client(open, 0)))).every((outcome) => outcome === "echo"), 15_000, `five clients echoed through the ${way} after the burst`);
  });

  it.each(["proxy", "gateway"] as const)("%s: a connect that fails for want of a descriptor is no mark against the endpoint", { timeout: 120_000 }, async (way) => {
    const open = way === "proxy" ? tcp(await proxyListener(agent, "shop/echo:main/TCP")) : tcp({ host: "127.0.0.1", port: ingress.tcp });
    const counted = async () => ((await actorDetail(way === "proxy" ? "traffic" : "gateway")).counters ?? {}) as Record<string, number>;
    const failedConnects = async () => (await counted())[way === "proxy" ? "tcp connect failed: EMFILE" : "backend connect failed: EMFILE"] ?? 0;
    const before = await failedConnects();
    // One free descriptor (the lowest free number, the next the kernel gives): the client's accept takes it, and the
    // agent's connect to the endpoint then fails with EMFILE, client after client. Ten clients, for the five the
    // agent's other sockets (its monitor polls) may leave to be refused at accept instead.
    for (let round = 0; round < 10 && (await failedConnects()) - before < 5; round++) {
      await setLimit(lowestFreeDescriptor() + 1);
      expect(await client(open, 0)).toBe("refused");
      await setLimit(descriptorLimit);
    }
    const counters = await counted();
    expect((counters[way === "proxy" ? "tcp connect failed: EMFILE" : "backend connect failed: EMFILE"] ?? 0) - before, JSON.stringify(counters)).toBeGreaterThanOrEqual(3);
    // Three in a row ejected the healthy endpoint ("endpoint ejected after repeated connect failures"), for longer at each burst.
    expect(counters, JSON.stringify(counters)).not.toHaveProperty("endpoint ejected");
    expect(await client(open, 0)).toBe("echo");
  });
});

describe("an agent with no descriptor for a UDP flow's socket", () => {
  it("counts it against no endpoint, and the flow works once there is one", { timeout: 60_000 }, async () => {
    const target = await proxyListener(agent, "shop/udp-echo:dns/UDP");
    const counted = async () => ((await actorDetail("traffic")).counters ?? {}) as Record<string, number>;
    const before = (await counted())["udp flow failed: EMFILE"] ?? 0;
    // None free: the datagram arrives on the agent's listening socket, and the new flow's own socket cannot be made.
    for (let round = 0; round < 10 && ((await counted())["udp flow failed: EMFILE"] ?? 0) - before < 5; round++) {
      await setLimit(lowestFreeDescriptor());
      try {
        await udpAsk(target, 300); // from a new client port: a new flow each time
      } finally {
        await setLimit(descriptorLimit);
      }
    }
    const counters = await counted();
    expect((counters["udp flow failed: EMFILE"] ?? 0) - before, JSON.stringify(counters)).toBeGreaterThanOrEqual(3);
    // Three in a row ejected the healthy endpoint.
    expect(counters, JSON.stringify(counters)).not.toHaveProperty("endpoint ejected");
    await eventually(() => udpAsk(target, 1_000), 10_000, "a datagram echoed through the UDP proxy");
  });
});

/** A UDP Service of one port (dns, 53) whose endpoint is the echo on edge-a. */
function udpEcho(port: number): object[] {
  return [
    { apiVersion: "v1", kind: "Service", metadata: { name: "udp-echo", namespace: "shop" }, spec: { clusterIP: "198.19.78.1", ports: [{ name: "dns", port: 53, protocol: "UDP" }] } },
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: "udp-echo-0", namespace: "shop", labels: { "kubernetes.io/service-name": "udp-echo" } },
      addressType: "IPv4",
      endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true }, nodeName: "edge-a" }],
      ports: [{ name: "dns", port, protocol: "UDP" }],
    },
  ];
}

/** One datagram from a fresh socket; true when it came back within `waitMs`. */
async function udpAsk(target: { host: string; port: number }, waitMs: number): Promise<boolean> {
  const socket = createSocket("udp4");
  try {
    return await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), waitMs);
      socket.once("message", () => (clearTimeout(timer), resolve(true)));
      socket.send("x", target.port, target.host);
    });
  } finally {
    socket.close();
  }
}

/** The lowest descriptor number the agent's process does not use: the one its next socket gets. */
function lowestFreeDescriptor(): number {
  const used = new Set(readdirSync(`/proc/${agent.child.pid}/fd`).map(Number));
  let free = 0;
  while (used.has(free)) free++;
  return free;
}

async function setLimit(limit: number): Promise<void> {
  const result = await runCommand(["prlimit", "--pid", String(agent.child.pid), `--nofile=${limit}:${descriptorLimit}`]);
  if (result.code !== 0) throw new Error(`prlimit failed: ${result.stderr}`);
}
