/**
 * Cluster IPs end to end, in network namespaces with real iptables and nft: a
 * client namespace running the traffic + proxier actors (one process, as the agent
 * runs them, with a real nats-server as bus) reaches service cluster IPs whose
 * endpoints are servers in other namespaces. The same suite runs on both backends.
 *
 * Layout (prefix lmpxl-): bridge lmpxl-br; cli 198.18.1.1/24 (+ .100-.107 as
 * extra client IPs); s1..s4 198.18.1.11-14/24; cluster IPs 198.19.0.0/16 routed
 * out of cli's eth0 (only DNAT makes them answer); pod 198.18.2.2/30 behind cli
 * (198.18.2.1), whose packets take the PREROUTING path.
 */
import type { ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { catalogKey } from "../../bus/catalog.ts";
import { checkLabPrerequisites, createLab, type Lab } from "../../lab/netns.ts";
import { eventually } from "../../test/support/ports.ts";
import type { InterceptBackend } from "../proxier/backend.ts";
import { IptablesBackend } from "../proxier/iptables.ts";
import { NftablesBackend } from "../proxier/nftables.ts";
import { testService, type TestServiceOptions } from "../../test/support/traffic-catalog.ts";
import { ReadyLine } from "../../nats/ready-line.ts";

const root = resolve(import.meta.dirname, "../..");
const node24 = resolve(root, "node_modules/.bin/node");
const labDir = resolve(import.meta.dirname, "../../lab/traffic");
const endpointIps = { s1: "198.18.1.11", s2: "198.18.1.12", s3: "198.18.1.13", s4: "198.18.1.14" };
const clientIps = Array.from({ length: 8 }, (_, i) => `198.18.1.${100 + i}`);
const tcp = (port: number) => [{ name: "main", protocol: "TCP" as const, port, targetPort: 8080 }];
const three = [{ ip: endpointIps.s1 }, { ip: endpointIps.s2 }, { ip: endpointIps.s3 }];

const services: TestServiceOptions[] = [
  { name: "web", clusterIP: "198.19.0.10", ports: tcp(80), endpoints: three },
  { name: "rnd", clusterIP: "198.19.0.11", ports: tcp(80), endpoints: three, annotations: { "service.leafmesh.io/lb-policy": "random" } },
  { name: "lc", clusterIP: "198.19.0.12", ports: tcp(80), endpoints: three, annotations: { "service.leafmesh.io/lb-policy": "least-connections" } },
  { name: "hash", clusterIP: "198.19.0.13", ports: tcp(80), endpoints: three, annotations: { "service.leafmesh.io/lb-policy": "consistent-hash" } },
  { name: "sticky", clusterIP: "198.19.0.14", ports: tcp(80), endpoints: three, affinityTimeoutSeconds: 600 },
  { name: "echo", clusterIP: "198.19.0.20", ports: [{ name: "dns", protocol: "UDP", port: 53, targetPort: 8053 }], endpoints: three },
  { name: "empty", clusterIP: "198.19.0.30", ports: tcp(80), endpoints: [] },
  { name: "skip", clusterIP: "198.19.0.31", ports: tcp(80), endpoints: three, labels: { "service.leafmesh.io/noproxy": "true" } },
  { name: "bad", clusterIP: "198.19.0.32", ports: tcp(80), endpoints: three, annotations: { "service.leafmesh.io/lb-policy": "fastest" } },
  { name: "flaky", clusterIP: "198.19.0.33", ports: tcp(80), endpoints: three },
  { name: "quiet", clusterIP: "198.19.0.34", ports: [{ name: "dns", protocol: "UDP", port: 53, targetPort: 8053 }], endpoints: [] },
];
/** TCP rules: web rnd lc hash sticky empty flaky; UDP: echo, quiet (refused: no endpoints). "skip" and "bad" get none. */
const expectedRules = 9;
/** Their cluster IPs, each routed on lo while intercepted (services/proxier/routes.ts). */
const ruledClusterIps = ["198.19.0.10", "198.19.0.11", "198.19.0.12", "198.19.0.13", "198.19.0.14", "198.19.0.20", "198.19.0.30", "198.19.0.33", "198.19.0.34"];

interface Agent {
  child: ChildProcess;
  events: Record<string, unknown>[];
  send(line: object): void;
  waitFor(test: (event: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  stderr(): string;
}

interface ProbeResult {
  answers: Record<string, number>;
  errors: Record<string, number>;
  bySource: Record<string, Record<string, number>>;
}

describe("cluster IPs in network namespaces", () => {
  let lab: Lab;
  let cli: string;
  let pod: string;
  const servers = new Map<string, ChildProcess>();
  const agents: Agent[] = [];
  let natsUrl = "";

  async function startEndpoint(name: keyof typeof endpointIps): Promise<void> {
    const child = lab.spawn(`${lab.prefix}${name}`, [node24, resolve(labDir, "endpoint-server.ts"), "--name", name, "--port", "8080", "--udp-port", "8053"]);
    servers.set(name, child);
    await new Promise<void>((done, fail) => {
      child.stdout!.once("data", () => done());
      child.once("exit", (code) => fail(new Error(`endpoint ${name} exited with ${code}`)));
    });
  }

  async function stopEndpoint(name: string): Promise<void> {
    const child = servers.get(name)!;
    const exited = new Promise((done) => child.once("exit", done));
    child.kill("SIGKILL");
    await exited;
    servers.delete(name);
  }

  function startAgent(intercept: string): Agent {
    const child = lab.spawn(cli, [node24, resolve(labDir, "agent-entry.ts"), "--node", "edge-a", "--intercept", intercept, "--nats", natsUrl, "--ejection-ms", "1000"], { stdio: ["pipe", "pipe", "pipe"] });
    const events: Record<string, unknown>[] = [];
    const waiters = new Set<() => void>();
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    createInterface({ input: child.stdout! }).on("line", (line) => {
      try {
        events.push(JSON.parse(line));
      } catch {
        events.push({ event: "output", line });
      }
      for (const waiter of waiters) waiter();
    });
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
    const agent: Agent = {
      child,
      events,
      exited,
      stderr: () => stderr,
      send: (line) => child.stdin!.write(`${JSON.stringify(line)}\n`),
      waitFor: (test, what) =>
        eventually(() => events.find(test) ?? (child.exitCode !== null ? Promise.reject(new Error(`agent exited: ${stderr}`)) : undefined), 20_000, what),
    };
    agents.push(agent);
    return agent;
  }

  function putAll(agent: Agent, list: TestServiceOptions[]) {
    for (const options of list) {
      const { service, slice } = testService(options);
      agent.send({ op: "put", key: catalogKey(service), object: service });
      agent.send({ op: "put", key: catalogKey(slice), object: slice });
    }
  }

  async function probe(args: string[], from = cli): Promise<ProbeResult> {
    return JSON.parse(await lab.exec(from, [node24, resolve(labDir, "probe.ts"), ...args], { timeoutMs: 60_000 })) as ProbeResult;
  }

  /** The cluster IPs the proxier routed on lo in cli (proto 76), sorted. */
  async function routedOnLo(): Promise<string[]> {
    const listed = await lab.exec(cli, ["ip", "-4", "-o", "route", "show", "proto", "76"]);
    return listed.split("\n").filter((line) => line.includes(" dev lo ")).map((line) => line.split(" ")[0]).sort();
  }

  async function stats(agent: Agent): Promise<Record<string, any>> {
    const before = agent.events.length;
    agent.send({ op: "stats" });
    return (await eventually(() => agent.events.slice(before).find((event) => event.event === "stats"), 5000, "stats")) as Record<string, any>;
  }

  beforeAll(async () => {
    await checkLabPrerequisites([
      { tool: "iptables-restore", debianPackage: "iptables" },
      { tool: "nft", debianPackage: "nftables" },
      { tool: "nats-server", debianPackage: "nats-server" },
      { tool: "conntrack", debianPackage: "conntrack" },
    ]);
    lab = await createLab({ prefix: "lmpxl-" });
    const bridge = await lab.bridge("br");
    cli = await lab.namespace("cli");
    await lab.link({ namespace: cli, bridge, address: "198.18.1.1/24" });
    for (const ip of clientIps) await lab.address(cli, "eth0", `${ip}/24`);
    await lab.route(cli, "198.19.0.0/16", { device: "eth0" });
    // A pod behind the node: its traffic to cluster IPs is routed through cli (PREROUTING).
    pod = await lab.namespace("pod");
    await lab.veth({ a: cli, b: pod, nameA: "pod0", nameB: "eth0", addressA: "198.18.2.1/30", addressB: "198.18.2.2/30" });
    await lab.route(pod, "default", { via: "198.18.2.1" });
    await lab.exec(cli, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    // The kernel sends a host about six ICMP errors in a burst, then one a second: both backends' refusals go to the same pod.
    await lab.exec(cli, ["sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0"]);
    for (const [name, ip] of Object.entries(endpointIps)) {
      const namespace = await lab.namespace(name);
      await lab.link({ namespace, bridge, address: `${ip}/24` });
      await startEndpoint(name as keyof typeof endpointIps);
    }
    natsUrl = "nats://127.0.0.1:4222";
    const nats = lab.spawn(cli, ["nats-server", "-p", "4222", "-a", "127.0.0.1"]);
    // Its ready line first, then the check: polled from the start, each look was two processes in the namespace every 50 ms.
    const ready = new ReadyLine();
    createInterface({ input: nats.stderr! }).on("line", (line) => ready.read(line));
    await ready.within(10_000);
    await eventually(async () => (await lab.run(cli, ["sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/4222"])).code === 0 || (await lab.run(cli, ["ss", "-ltn", "sport = :4222"])).stdout.includes("4222"), 10_000, "nats-server in cli");
  });

  afterAll(async () => {
    for (const agent of agents) agent.child.kill("SIGKILL");
    await lab?.teardown();
  });

  const backends: [string, (namespace: string) => InterceptBackend][] = [
    ["iptables", (namespace) => new IptablesBackend({ namespace })],
    ["nftables", (namespace) => new NftablesBackend({ namespace })],
  ];

  describe.each(backends)("with %s", (intercept, makeBackend) => {
    let agent: Agent;
    const inspect = () => makeBackend(cli).inspect();

    afterEach(({ task }) => {
      // On a failure, what the agent said helps more than the assertion alone.
      if (task.result?.state === "fail") console.error(`agent (${intercept}) exit ${agent.child.exitCode}, stderr:\n${agent.stderr().slice(-4000)}`);
    });

    beforeAll(async () => {
      if (!servers.has("s2")) await startEndpoint("s2");
      agent = startAgent(intercept);
      await agent.waitFor((event) => event.event === "ready", "agent ready");
      putAll(agent, services);
      await agent.waitFor((event) => event.event === "synced" && event.rules === expectedRules, `${expectedRules} rules synced`);
    });

    it("round robin: 300 connections to the cluster IP, 100 per endpoint", async () => {
      const result = await probe(["--host", "198.19.0.10", "--port", "80", "--count", "300"]);
      expect(result).toMatchObject({ answers: { s1: 100, s2: 100, s3: 100 }, errors: {} });
    });

    it("a pod routed through the node reaches the cluster IP too (PREROUTING, TCP and UDP)", async () => {
      const result = await probe(["--host", "198.19.0.10", "--port", "80", "--count", "30"], pod);
      expect(result).toMatchObject({ answers: { s1: 10, s2: 10, s3: 10 }, errors: {} });
      const udp = await probe(["--host", "198.19.0.20", "--port", "53", "--count", "6", "--udp"], pod);
      expect(udp).toMatchObject({ answers: { s1: 2, s2: 2, s3: 2 }, errors: {} });
    });

    it("random: 600 connections spread over all endpoints", async () => {
      const result = await probe(["--host", "198.19.0.11", "--port", "80", "--count", "600"]);
      expect(result.errors).toEqual({});
      // Binomial(600, 1/3): mean 200, sd 11.5; 120..280 is ±7 sd.
      for (const name of ["s1", "s2", "s3"]) expect(result.answers[name]).toBeGreaterThan(120);
      for (const name of ["s1", "s2", "s3"]) expect(result.answers[name]).toBeLessThan(280);
    });

    it("least connections: 30 connections held open land 10 per endpoint", async () => {
      const result = await probe(["--host", "198.19.0.12", "--port", "80", "--count", "30", "--hold"]);
      expect(result).toMatchObject({ answers: { s1: 10, s2: 10, s3: 10 }, errors: {} });
    });

    it("consistent hash on client IP: each client IP stays on one endpoint, clients spread", async () => {
      const result = await probe(["--host", "198.19.0.13", "--port", "80", "--count", "80", "--from", clientIps.join(",")]);
      expect(result.errors).toEqual({});
      for (const answers of Object.values(result.bySource)) expect(Object.keys(answers)).toHaveLength(1);
      expect(Object.keys(result.answers).length).toBeGreaterThan(1);
    });

    it("sessionAffinity ClientIP keeps each client on its endpoint", async () => {
      const result = await probe(["--host", "198.19.0.14", "--port", "80", "--count", "80", "--from", clientIps.join(",")]);
      expect(result.errors).toEqual({});
      expect(Object.keys(result.bySource)).toHaveLength(8);
      for (const answers of Object.values(result.bySource)) expect(Object.values(answers)).toEqual([10]);
      expect(Object.keys(result.answers).length).toBe(3); // round robin underneath spreads the 8 clients
    });

    it("UDP: echo endpoints answer through the cluster IP, flows spread", async () => {
      const result = await probe(["--host", "198.19.0.20", "--port", "53", "--count", "30", "--udp"]);
      expect(result).toMatchObject({ answers: { s1: 10, s2: 10, s3: 10 }, errors: {} });
    });

    it("a service without endpoints refuses at once with a reset", async () => {
      const started = Date.now();
      const result = await probe(["--host", "198.19.0.30", "--port", "80", "--count", "3", "--timeout-ms", "10000"]);
      expect(result).toMatchObject({ answers: {}, errors: { ECONNRESET: 3 } });
      expect(Date.now() - started).toBeLessThan(10_000); // far from the probe's own timeout
    });

    it("a UDP service without endpoints refuses at once (ICMP port unreachable, as kube-proxy's REJECT), from the host and from a pod, and serves once it has endpoints", async () => {
      const quiet = services.find((service) => service.name === "quiet")!;
      const refusedProbe = ["--host", "198.19.0.34", "--port", "53", "--count", "3", "--udp", "--connect", "--timeout-ms", "10000"];
      // This host's client: its own OUTPUT chain rejects the datagram, and the send fails (as under kube-proxy).
      expect(await probe(refusedProbe)).toMatchObject({ answers: {}, errors: { EPERM: 3 } });
      // A pod: the ICMP port unreachable comes back, and its connected socket says ECONNREFUSED.
      expect(await probe(refusedProbe, pod)).toMatchObject({ answers: {}, errors: { ECONNREFUSED: 3 } });
      expect((await inspect()).rules).toContain("198.19.0.34:53/UDP -> refused");
      putAll(agent, [{ ...quiet, endpoints: three }]);
      await eventually(async () => Object.keys((await probe(["--host", "198.19.0.34", "--port", "53", "--count", "3", "--udp", "--connect", "--timeout-ms", "2000"])).answers).length === 3, 15_000, "the endpoints to answer");
      putAll(agent, [quiet]);
      // The rule first: a probe sent while the endpoints' rule still stood went to the proxy, where nothing answers
      // now, and waited out its 10 s timeout before the next probe met the refusal.
      await eventually(async () => (await inspect()).rules.includes("198.19.0.34:53/UDP -> refused"), 15_000, "the refusing rule again");
      await eventually(async () => (await probe(refusedProbe, pod)).errors.ECONNREFUSED === 3, 15_000, "the refusal again");
    });

    it("noproxy and invalid-annotation services get no rule; the rest are there exactly once", async () => {
      const state = await inspect();
      expect(state.hooks).toBe(2);
      expect(state.rules).toHaveLength(expectedRules);
      expect(state.rules.some((rule) => rule.startsWith("198.19.0.31:"))).toBe(false);
      expect(state.rules.some((rule) => rule.startsWith("198.19.0.32:"))).toBe(false);
      expect(state.rules.some((rule) => rule.startsWith("198.19.0.20:53/UDP -> 127.0.0.1:"))).toBe(true);
      const reported = await stats(agent);
      expect(reported.rejected).toEqual([expect.objectContaining({ service: "lab/bad", error: expect.stringContaining("'fastest' is not a policy") })]);
    });

    it("a killed endpoint is skipped: no client sees a failure, and it is ejected", async () => {
      await stopEndpoint("s2");
      const result = await probe(["--host", "198.19.0.33", "--port", "80", "--count", "60"]);
      expect(result).toMatchObject({ answers: { s1: expect.any(Number), s3: expect.any(Number) }, errors: {} });
      expect(result.answers.s2).toBeUndefined();
      const reported = await stats(agent);
      // Ejections last 1 s in this lab, so the count says it, not the list of the moment.
      expect(reported.traffic.counters["endpoint ejected"]).toBeGreaterThanOrEqual(1);
      expect(reported.traffic.counters["tcp refused: no endpoint reachable"]).toBeUndefined();
      await startEndpoint("s2");
    });

    it("a scaled-up endpoint takes load once the catalog says so", async () => {
      const web = services[0];
      putAll(agent, [{ ...web, endpoints: [...three, { ip: endpointIps.s4 }] }]);
      // s4 is new; s2 comes back from its ejection (1 s in this lab) after the previous test.
      await eventually(async () => Object.keys((await probe(["--host", "198.19.0.10", "--port", "80", "--count", "8"])).answers).length === 4, 15_000, "s2 and s4 to answer");
      const result = await probe(["--host", "198.19.0.10", "--port", "80", "--count", "400"]);
      expect(result).toMatchObject({ answers: { s1: 100, s2: 100, s3: 100, s4: 100 }, errors: {} });
      putAll(agent, [web]);
    });

    it("a node with no route to the cluster IPs (no default route: an offline site) still reaches them: each is routed on lo", async () => {
      const ours = await routedOnLo();
      expect(ours).toEqual(ruledClusterIps);
      await lab.exec(cli, ["ip", "route", "del", "198.19.0.0/16"]);
      try {
        // Without the routes on lo, connect() failed with ENETUNREACH before the OUTPUT hook's DNAT.
        const result = await probe(["--host", "198.19.0.10", "--port", "80", "--count", "30"]);
        expect(result).toMatchObject({ answers: { s1: 10, s2: 10, s3: 10 }, errors: {} });
        const udp = await probe(["--host", "198.19.0.20", "--port", "53", "--count", "6", "--udp"]);
        // Every datagram answered. Not how they spread: a source port the kernel gives again within the proxy's
        // 30 s UDP idle time is the same flow, and goes to that flow's endpoint (2/3/1 in a full run of 2026-12-07).
        expect(udp.errors).toEqual({});
        expect(Object.values(udp.answers).reduce((sum, count) => sum + count, 0)).toBe(6);
        // The route the kernel takes for a cluster IP is ours, on lo (MTU 65,536: full-size TCP segments to the listener).
        expect((await lab.exec(cli, ["ip", "-o", "route", "get", "198.19.0.10"])).trim()).toMatch(/^198\.19\.0\.10 dev lo /);
      } finally {
        await lab.exec(cli, ["ip", "route", "add", "198.19.0.0/16", "dev", "eth0"]);
      }
    });

    it("kill -9 and a restart leave exactly one set of rules; a clean stop leaves none", async () => {
      // A UDP client that keeps its source port across the restart (its conntrack entry points at the old listener).
      const fixedPort = ["--host", "198.19.0.20", "--port", "53", "--count", "1", "--udp", "--sport", "40053", "--timeout-ms", "2000"];
      expect((await probe(fixedPort)).errors).toEqual({});
      agent.child.kill("SIGKILL");
      await agent.exited;
      expect((await inspect()).rules).toHaveLength(expectedRules); // a crash leaves its rules behind
      expect(await routedOnLo()).toEqual(ruledClusterIps); // and its routes
      agent = startAgent(intercept);
      await agent.waitFor((event) => event.event === "ready", "restarted agent ready");
      putAll(agent, services);
      await agent.waitFor((event) => event.event === "synced" && event.rules === expectedRules, "rules synced after restart");
      const state = await inspect();
      expect(state).toEqual({ rules: expect.any(Array), hooks: 2, guard: true, ipv6: { hooks: 2, guard: true } }); // the lab has IPv6: its guard is in too
      expect(state.rules).toHaveLength(expectedRules);
      expect(new Set(state.rules.map((rule) => rule.split(" -> ")[0])).size).toBe(expectedRules);
      expect(await routedOnLo()).toEqual(ruledClusterIps); // one route each, not two
      const result = await probe(["--host", "198.19.0.10", "--port", "80", "--count", "30"]);
      expect(result).toMatchObject({ answers: { s1: 10, s2: 10, s3: 10 }, errors: {} });
      expect((await probe(fixedPort)).errors).toEqual({}); // the stale entry was cleared with the sync

      agent.child.kill("SIGTERM");
      expect(await agent.exited).toBe(0);
      expect(await inspect()).toEqual({ rules: [], hooks: 0, guard: false });
      expect(await routedOnLo()).toEqual([]);
    });
  });
});
