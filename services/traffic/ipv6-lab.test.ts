/**
 * IPv6 cluster IPs end to end, in network namespaces with real ip6tables and nft:
 * the traffic and proxier actors in one process (lab/traffic/agent-entry.ts, a
 * real nats-server as bus) in the node namespace; curl and socat as clients, on
 * the node itself (OUTPUT) and in a pod routed through it (PREROUTING). Both
 * backends run the same suite.
 *
 * Layout (prefix lm6l-): bridge lm6l-br; cli 198.18.1.1/24 and fd00:1::1/64;
 * s1, s2 198.18.1.11-12 and fd00:1::11-12; IPv6 cluster IPs fd00:99::/64 routed
 * out of cli's eth0 (only DNAT makes them answer); pod fd00:2::2/64 behind cli.
 */
import type { ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { catalogKey, type EndpointSlice, type Service } from "../../bus/catalog.ts";
import { ipv6ListenerAddress, ipv6ListenerCidr } from "../../bus/ipv6-listeners.ts";
import { checkLabPrerequisites, createLab, type Lab } from "../../lab/netns.ts";
import { eventually } from "../../test/support/ports.ts";
import { writeNoIpv6KernelTools } from "../../test/support/no-ipv6-kernel.ts";
import { testService } from "../../test/support/traffic-catalog.ts";
import type { InterceptBackend } from "../proxier/backend.ts";
import { IptablesBackend } from "../proxier/iptables.ts";
import { NftablesBackend } from "../proxier/nftables.ts";
import { ReadyLine } from "../../nats/ready-line.ts";

const root = resolve(import.meta.dirname, "../..");
const node24 = resolve(root, "node_modules/.bin/node");
const labDir = resolve(root, "lab/traffic");
const endpoints4 = [{ ip: "198.18.1.11" }, { ip: "198.18.1.12" }];
const tcp = [{ name: "http", protocol: "TCP" as const, port: 80, targetPort: 8080 }];
const udp = [{ name: "dns", protocol: "UDP" as const, port: 53, targetPort: 8053 }];

/** A Service with the given cluster IPs (families from the addresses) and a slice of the given family. */
function service(name: string, clusterIPs: string[], ports: typeof tcp | typeof udp, endpoints: { ip: string; node?: string }[], extra: Partial<Service> = {}): [Service, EndpointSlice] {
  const made = testService({ name, clusterIP: clusterIPs[0], ports, endpoints });
  const ipFamilies = clusterIPs.map((ip) => (ip.includes(":") ? "IPv6" : "IPv4") as "IPv4" | "IPv6");
  return [
    { ...made.service, clusterIPs, ipFamilies, ...extra },
    { ...made.slice, addressType: endpoints.some((endpoint) => endpoint.ip.includes(":")) ? "IPv6" : "IPv4" },
  ];
}

const catalog = [
  service("web", ["198.19.0.10", "fd00:99::10"], tcp, endpoints4),
  service("echo", ["198.19.0.20", "fd00:99::20"], udp, endpoints4),
  service("quiet", ["fd00:99::34"], udp, []),
  service("v6ep", ["fd00:99::40"], tcp, [{ ip: "fd00:1::11" }]),
  service("v6udp", ["fd00:99::41"], udp, [{ ip: "fd00:1::12" }]),
  service("local", ["fd00:99::50"], tcp, [{ ip: "198.18.1.11", node: "edge-b" }], { internalTrafficPolicy: "Local" }),
];
/** web 2 + echo 2 + quiet + v6ep + v6udp + local. */
const expectedRules = 8;
const expected6 = [
  "[fd00:99::10]:80/TCP",
  "[fd00:99::20]:53/UDP",
  "[fd00:99::34]:53/UDP -> refused",
  "[fd00:99::40]:80/TCP",
  "[fd00:99::41]:53/UDP",
  "[fd00:99::50]:80/TCP",
];

interface Agent {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  send(line: object): void;
  waitFor(test: (line: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  stderr(): string;
}

describe("IPv6 cluster IPs in network namespaces", () => {
  let lab: Lab;
  let cli: string;
  let pod: string;
  let s1: string;
  const agents: Agent[] = [];

  /** The agent in `namespace`; `env` runs it through env(1) (a PATH without ip6tables). */
  function startAgent(intercept: string, namespace = cli, env: string[] = [], extra: string[] = []): Agent {
    const bus = namespace === cli ? ["--nats", "nats://127.0.0.1:4222"] : [];
    const argv = [...(env.length > 0 ? ["env", ...env] : []), node24, resolve(labDir, "agent-entry.ts"), "--node", "edge-a", "--intercept", intercept, ...bus, ...extra];
    const child = lab.spawn(namespace, argv, { stdio: ["pipe", "pipe", "pipe"] });
    const lines: Record<string, unknown>[] = [];
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    createInterface({ input: child.stdout! }).on("line", (line) => {
      try {
        lines.push(JSON.parse(line));
      } catch {
        lines.push({ event: "output", line });
      }
    });
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
    const agent: Agent = {
      child,
      lines,
      exited,
      stderr: () => stderr,
      send: (line) => child.stdin!.write(`${JSON.stringify(line)}\n`),
      waitFor: (test, what) => eventually(() => lines.find(test) ?? (child.exitCode !== null ? Promise.reject(new Error(`agent exited: ${stderr}`)) : undefined), 20_000, what),
    };
    agents.push(agent);
    return agent;
  }

  function putAll(agent: Agent, list: [Service, EndpointSlice][]) {
    for (const [svc, slice] of list) {
      agent.send({ op: "put", key: catalogKey(svc), object: svc });
      agent.send({ op: "put", key: catalogKey(slice), object: slice });
    }
  }

  async function startServing(agent: Agent) {
    await agent.waitFor((line) => line.event === "ready", "agent ready");
    putAll(agent, catalog);
    await agent.waitFor((line) => line.event === "synced" && line.rules === expectedRules, `${expectedRules} rules synced`).catch((error: Error) => {
      throw new Error(`${error.message}; the agent said:\n${agent.lines.map((line) => JSON.stringify(line)).join("\n")}`);
    });
  }

  /** curl -g to [address]:port: what the endpoint said first (its name), or curl's exit code and error. */
  async function curl(from: string, address: string, port = 80): Promise<{ code: number; out: string }> {
    const result = await lab.run(from, ["curl", "-g", "--http0.9", "-sS", "-m", "5", `http://[${address}]:${port}/`]);
    return { code: result.code, out: result.code === 0 ? result.stdout.split("\n")[0] : result.stderr.trim() };
  }

  /** One datagram through socat: the endpoint's answer ("s1:ping"), or socat's error; with no answer at all socat exits 0 with nothing: the answer tells, not the code. */
  async function socat(from: string, address: string, port = 53, sourcePort?: number): Promise<{ code: number; out: string }> {
    const options = sourcePort ? `,sourceport=${sourcePort}` : "";
    const result = await lab.run(from, ["socat", "-T", "3", "-", `UDP6:[${address}]:${port}${options}`], { input: "ping\n", timeoutMs: 10_000 });
    return { code: result.code, out: result.code === 0 ? result.stdout.trim() : result.stderr.trim() };
  }

  beforeAll(async () => {
    await checkLabPrerequisites([
      { tool: "ip6tables-restore", debianPackage: "iptables" },
      { tool: "nft", debianPackage: "nftables" },
      { tool: "nats-server", debianPackage: "nats-server" },
      { tool: "curl", debianPackage: "curl" },
      { tool: "socat", debianPackage: "socat" },
    ]);
    lab = await createLab({ prefix: "lm6l-" });
    const bridge = await lab.bridge("br");
    cli = await lab.namespace("cli");
    await lab.link({ namespace: cli, bridge, address: "198.18.1.1/24" });
    // nodad: no second of duplicate address detection before the address can be used.
    await lab.exec(cli, ["ip", "-6", "address", "add", "fd00:1::1/64", "dev", "eth0", "nodad"]);
    await lab.exec(cli, ["ip", "-6", "route", "add", "fd00:99::/64", "dev", "eth0"]);
    pod = await lab.namespace("pod");
    await lab.veth({ a: cli, b: pod, nameA: "pod0", nameB: "eth0" });
    await lab.exec(cli, ["ip", "-6", "address", "add", "fd00:2::1/64", "dev", "pod0", "nodad"]);
    await lab.exec(pod, ["ip", "-6", "address", "add", "fd00:2::2/64", "dev", "eth0", "nodad"]);
    await lab.exec(pod, ["ip", "-6", "route", "add", "default", "via", "fd00:2::1"]);
    await lab.exec(cli, ["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"]);
    await lab.exec(cli, ["sysctl", "-q", "-w", "net.ipv6.icmp.ratelimit=0"]);
    for (const [index, name] of ["s1", "s2"].entries()) {
      const namespace = await lab.namespace(name);
      if (name === "s1") s1 = namespace;
      await lab.link({ namespace, bridge, address: `198.18.1.${11 + index}/24` });
      await lab.exec(namespace, ["ip", "-6", "address", "add", `fd00:1::${11 + index}/64`, "dev", "eth0", "nodad"]);
      const child = lab.spawn(namespace, [node24, resolve(labDir, "endpoint-server.ts"), "--name", name, "--port", "8080", "--udp-port", "8053"]);
      await new Promise<void>((done, fail) => {
        child.stdout!.once("data", () => done());
        child.once("exit", (code) => fail(new Error(`endpoint ${name} exited with ${code}`)));
      });
    }
    const nats = lab.spawn(cli, ["nats-server", "-p", "4222", "-a", "127.0.0.1"]);
    // Its ready line first, then the check: polled from the start, each look was two processes in the namespace every 50 ms.
    const ready = new ReadyLine();
    createInterface({ input: nats.stderr! }).on("line", (line) => ready.read(line));
    await ready.within(10_000);
    await eventually(async () => (await lab.run(cli, ["ss", "-ltn", "sport = :4222"])).stdout.includes("4222"), 10_000, "nats-server in cli");
  });

  afterAll(async () => {
    for (const agent of agents) agent.child.kill("SIGKILL");
    await lab?.teardown();
    for (const dir of ["bin", "nov6"]) rmSync(`/tmp/lm6l-${dir}`, { recursive: true, force: true });
  });

  const backends: [string, (namespace: string) => InterceptBackend][] = [
    ["iptables", (namespace) => new IptablesBackend({ namespace })],
    ["nftables", (namespace) => new NftablesBackend({ namespace })],
  ];
  const makeBackend = (name: string, namespace: string) => backends.find(([backend]) => backend === name)![1](namespace);

  describe.each(backends)("with %s", (intercept, makeBackend) => {
    let agent: Agent;
    const inspect = () => makeBackend(cli).inspect();

    afterEach(({ task }) => {
      if (task.result?.state === "fail") console.error(`agent (${intercept}) output:\n${agent.lines.slice(-30).map((line) => JSON.stringify(line)).join("\n")}`);
    });

    beforeAll(async () => {
      agent = startAgent(intercept);
      await startServing(agent);
    });

    it("TCP: curl to a dual-stack Service's IPv6 cluster IP reaches its IPv4 endpoints, from the node and from a pod", async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 4; i++) {
        const answer = await curl(cli, "fd00:99::10");
        expect(answer.code, answer.out).toBe(0);
        seen.add(answer.out);
      }
      expect([...seen].sort()).toEqual(["s1", "s2"]); // round robin, as for IPv4
      expect(await curl(pod, "fd00:99::10")).toMatchObject({ code: 0, out: expect.stringMatching(/^s[12]$/) });
      // The IPv4 cluster IP of the same Service still works.
      expect((await lab.run(cli, ["curl", "--http0.9", "-sS", "-m", "5", "http://198.19.0.10/"])).stdout).toMatch(/^s[12]\n/);
    });

    it("UDP: a datagram to the IPv6 cluster IP is answered by an endpoint, from the node and from a pod", async () => {
      expect(await socat(cli, "fd00:99::20")).toMatchObject({ code: 0, out: expect.stringMatching(/^s[12]:ping$/) });
      expect(await socat(pod, "fd00:99::20")).toMatchObject({ code: 0, out: expect.stringMatching(/^s[12]:ping$/) });
    });

    it("a UDP Service made dual-stack is served on its new IPv6 cluster IP (its IPv6 socket opens then)", async () => {
      const [single, slice] = service("late", ["198.19.0.21"], udp, endpoints4);
      putAll(agent, [[single, slice]]);
      await agent.waitFor((line) => line.event === "synced" && line.rules === expectedRules + 1, "late's IPv4 rule");
      putAll(agent, [service("late", ["198.19.0.21", "fd00:99::21"], udp, endpoints4)]);
      await eventually(async () => /^s[12]:ping$/.test((await socat(pod, "fd00:99::21")).out), 15_000, "late's IPv6 cluster IP to answer");
      agent.send({ op: "delete", key: catalogKey(slice) });
      agent.send({ op: "delete", key: catalogKey(single) });
      await eventually(async () => !(await inspect()).rules.some((rule) => rule.includes("198.19.0.21") || rule.includes("fd00:99::21")), 15_000, "late's rules gone");
    });

    it("IPv6 endpoint addresses behind an IPv6 cluster IP, TCP and UDP", async () => {
      expect(await curl(pod, "fd00:99::40")).toEqual({ code: 0, out: "s1" });
      expect(await socat(pod, "fd00:99::41")).toEqual({ code: 0, out: "s2:ping" });
    });

    it("a UDP Service without endpoints is refused at once (ICMPv6 port unreachable) on its IPv6 cluster IP", async () => {
      const fromPod = await socat(pod, "fd00:99::34");
      expect(fromPod.code).not.toBe(0);
      expect(fromPod.out).toMatch(/Connection refused/);
      const fromNode = await socat(cli, "fd00:99::34");
      expect(fromNode.code).not.toBe(0);
      expect(fromNode.out).toMatch(/Operation not permitted|Connection refused/);
      // With endpoints it serves; without them again it refuses, also a client that keeps its source port (its
      // conntrack entry, NATed to the listener, is cleared with the sync: else its datagrams would go on to a listener
      // with nothing to send them to, and the client would wait out its timeout).
      const quiet = catalog.find(([svc]) => svc.name === "quiet")!;
      putAll(agent, [service("quiet", ["fd00:99::34"], udp, endpoints4)]);
      await eventually(async () => /^s[12]:ping$/.test((await socat(pod, "fd00:99::34", 53, 40153)).out), 15_000, "the endpoints to answer");
      putAll(agent, [quiet]);
      await eventually(async () => /Connection refused/.test((await socat(pod, "fd00:99::34", 53, 40153)).out), 15_000, "the refusal again, at the same source port");
    });

    it("internalTrafficPolicy Local with no endpoint on this node: refused at once on the IPv6 cluster IP", async () => {
      const answer = await curl(cli, "fd00:99::50");
      expect(answer.code).not.toBe(0);
      expect(answer.out).toMatch(/reset|refused|Couldn.t connect/i);
    });

    it("the kernel holds each IPv6 rule once, both hooks and the guard; each IPv6 cluster IP is routed on lo", async () => {
      const state = await inspect();
      expect(state.hooks).toBe(2);
      expect(state.ipv6).toEqual({ hooks: 2, guard: true });
      const v6 = state.rules.filter((rule) => rule.startsWith("["));
      expect(v6).toHaveLength(expected6.length);
      expected6.forEach((start, index) => expect(v6[index].startsWith(start)).toBe(true));
      const routed = (await lab.exec(cli, ["ip", "-6", "-o", "route", "show", "table", "main", "proto", "76"])).split("\n").filter(Boolean).map((line) => line.split(" ")[0]);
      expect(routed.sort()).toEqual(["fd00:99::10", "fd00:99::20", "fd00:99::34", "fd00:99::40", "fd00:99::41", "fd00:99::50"]);
    });

    it("the listener prefix is closed to the network: a neighbour that routes it to the node reaches nothing", async () => {
      agent.send({ op: "stats" });
      const stats = (await agent.waitFor((line) => line.event === "stats", "stats")) as { listeners: { key: string; listenerHost6?: string; listenerPort6?: number }[] };
      const web = stats.listeners.find((listener) => listener.key === "lab/web:http/TCP")!;
      expect(web.listenerHost6).toBeDefined();
      await lab.exec(s1, ["ip", "-6", "route", "replace", ipv6ListenerCidr, "via", "fd00:1::1"]);
      try {
        // Straight to the web port's own IPv6 listener address, not DNATed: the guard drops it.
        const direct = await lab.run(s1, ["curl", "-g", "--http0.9", "-sS", "-m", "2", `http://[${web.listenerHost6}]:${web.listenerPort6}/`]);
        expect(direct.code).toBe(28); // timed out: dropped, not answered
      } finally {
        await lab.exec(s1, ["ip", "-6", "route", "del", ipv6ListenerCidr]);
      }
    });

    it("kill -9 and a restart leave one set of IPv6 rules; a clean stop leaves nothing of either family", async () => {
      agent.child.kill("SIGKILL");
      await agent.exited;
      expect((await inspect()).ipv6).toEqual({ hooks: 2, guard: true }); // a crash leaves its rules behind
      agent = startAgent(intercept);
      await startServing(agent);
      const state = await inspect();
      expect(state.ipv6).toEqual({ hooks: 2, guard: true });
      expect(state.rules.filter((rule) => rule.startsWith("["))).toHaveLength(expected6.length);
      expect(await curl(pod, "fd00:99::10")).toMatchObject({ code: 0 });
      expect(await socat(cli, "fd00:99::20")).toMatchObject({ code: 0 });

      agent.child.kill("SIGTERM");
      expect(await agent.exited).toBe(0);
      expect(await inspect()).toEqual({ rules: [], hooks: 0, guard: false });
      expect(await lab.exec(cli, ["ip", "-6", "route", "show", "table", "all", "proto", "76"])).toBe("");
      expect(await lab.exec(cli, ["ip", "-6", "address", "show", "dev", "lo"])).not.toContain(ipv6ListenerAddress);
      expect(await lab.exec(cli, ["ip6tables-save"])).not.toContain("LEAFMESH");
    });
  });

  describe("where IPv6 cannot be intercepted", () => {
    const web = service("web", ["198.19.0.10", "fd00:99::10"], tcp, endpoints4);
    const cases: [string, string, (namespace: string) => Promise<string[]>][] = [
      ["IPv6 disabled by sysctl (iptables)", "iptables", async (namespace) => {
        await lab.exec(namespace, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
        return [];
      }],
      ["IPv6 disabled by sysctl (nftables)", "nftables", async (namespace) => {
        await lab.exec(namespace, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
        return [];
      }],
      ["no ip6tables on PATH", "iptables", async () => {
        // Every tool the agent runs, from a directory without ip6tables.
        const bin = `/tmp/${lab.prefix}bin`;
        await lab.exec("host", ["sh", "-c", `rm -rf ${bin} && mkdir -p ${bin} && for tool in iptables iptables-save iptables-restore ip sysctl conntrack sh; do ln -s "$(command -v $tool)" ${bin}/$tool; done`]);
        return [`PATH=${bin}`];
      }],
      ...(["iptables", "nftables"] as const).map((intercept): (typeof cases)[number] => [`a kernel without IPv6 (${intercept})`, intercept, async () => [`PATH=${writeNoIpv6KernelTools(`/tmp/${lab.prefix}nov6`)}:${process.env.PATH}`]]),
    ];

    it.each(cases)("%s: IPv4 cluster IPs are served, the reason is said once, no IPv6 rule goes in", async (name, intercept, setup) => {
      const namespace = await lab.namespace(`n${agents.length}`);
      await lab.link({ namespace, bridge: `${lab.prefix}br`, address: `198.18.1.${50 + agents.length}/24` });
      await lab.route(namespace, "198.19.0.0/16", { device: "eth0" });
      const env = await setup(namespace);
      const agent = startAgent(intercept, namespace, env);
      await agent.waitFor((line) => line.event === "ready", "agent ready");
      putAll(agent, [web, service("echo", ["198.19.0.20", "fd00:99::20"], udp, endpoints4)]);
      await agent.waitFor((line) => line.event === "synced" && line.rules === 2, "the IPv4 rules synced");
      const answer = await lab.run(namespace, ["curl", "--http0.9", "-sS", "-m", "5", "http://198.19.0.10/"]);
      expect(answer.stdout.split("\n")[0]).toMatch(/^s[12]$/);
      agent.send({ op: "stats" });
      const stats = (await agent.waitFor((line) => line.event === "stats", "stats")) as { proxier: { ipv6?: string } };
      const why = name.startsWith("a kernel") ? /^off: the kernel has no IPv6 here/ : env.length > 0 ? /^off: ip6tables is not installed/ : /^off: net\.ipv6\.conf\.all\.disable_ipv6 is 1/;
      expect(stats.proxier.ipv6).toMatch(why);
      const said = agent.stderr().split("\n").filter((line) => line.includes("IPv6 cluster IPs are not intercepted"));
      expect(said).toHaveLength(1);
      // A UDP port's IPv6 socket that cannot bind is no listener error: IPv4 serves it.
      expect(agent.stderr()).not.toContain("udp listener error");
      const state = await makeBackend(intercept, namespace).inspect();
      expect(state).toEqual({ rules: [expect.stringMatching(/^198\.19\.0\.10:80\/TCP -> /), expect.stringMatching(/^198\.19\.0\.20:53\/UDP -> /)], hooks: 2, guard: true });
      agent.child.kill("SIGTERM");
      expect(await agent.exited).toBe(0);
      expect(await makeBackend(intercept, namespace).inspect()).toEqual({ rules: [], hooks: 0, guard: false });
    });

    it("a non-loopback --proxy-host: TCP's IPv6 cluster IPs are not intercepted and the log says why, once; UDP's are", async () => {
      const namespace = await lab.namespace("proxyhost");
      await lab.link({ namespace, bridge: `${lab.prefix}br`, address: "198.18.1.60/24" });
      await lab.route(namespace, "198.19.0.0/16", { device: "eth0" });
      await lab.exec(namespace, ["ip", "-6", "address", "add", "fd00:1::60/64", "dev", "eth0", "nodad"]);
      await lab.exec(namespace, ["ip", "-6", "route", "add", "fd00:99::/64", "dev", "eth0"]);
      const agent = startAgent("nftables", namespace, [], ["--listen-host", "198.18.1.60"]);
      await agent.waitFor((line) => line.event === "ready", "agent ready");
      putAll(agent, [web, service("echo", ["198.19.0.20", "fd00:99::20"], udp, endpoints4)]);
      await agent.waitFor((line) => line.event === "synced" && line.rules === 3, "web's IPv4 rule and echo's two synced");
      expect((await lab.run(namespace, ["curl", "--http0.9", "-sS", "-m", "5", "http://198.19.0.10/"])).stdout).toMatch(/^s[12]\n/);
      expect(await socat(namespace, "fd00:99::20")).toMatchObject({ code: 0, out: expect.stringMatching(/^s[12]:ping$/) });
      await eventually(() => agent.stderr().includes("are not intercepted (lab/web:http/TCP)"), 5_000, "the reason in the log");
      expect(agent.stderr().split("\n").filter((line) => line.includes("IPv6 cluster IPs of"))).toHaveLength(1);
      agent.child.kill("SIGTERM");
      expect(await agent.exited).toBe(0);
    });
  });
});
