/**
 * What an agent (cluster DNS on 169.254.96.16, nftables or iptables interception) leaves on its host, read from the kernel in
 * a network namespace of its own (root): nftables and ip(6)tables rules, routes of every table (both families), ip rules, addresses
 * and links, route_localnet. A second agent started there while one intercepts is refused by name and leaves the
 * first's rules alone; after a kill -9 the next start cleans up what the dead one left (its DNS address too); a
 * clean stop leaves the host as it was before the first start.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, inNamespace, runCommand, type Lab } from "../lab/netns.ts";
import { iptablesRejectHooks } from "../services/proxier/rules.ts";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { cliPath, launch, nodeBinary, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

let lab: Lab;
let namespace = "";

/** What `hostState` reads, in this order. */
const stateCommands = [
  ["nft", "list", "ruleset"],
  ["iptables-save"],
  // IPv6 too: the agent routes its IPv6 listener prefix on lo and puts an address there (bus/ipv6-listeners.ts).
  ["ip6tables-save"],
  ["ip", "route", "show", "table", "all"],
  ["ip", "-6", "route", "show", "table", "all"],
  ["ip", "rule"],
  ["ip", "-o", "addr"],
  ["ip", "-o", "link"],
  ["sysctl", "-n", "net.ipv4.conf.all.route_localnet"],
];
/** Written before each command's output by the one shell that runs them all: a byte no listing holds (\001), then a name. */
const stateMark = "LMSTATE";
const stateSeparator = `\u0001${stateMark}\n`;

/** Everything of the namespace's host state a leafmesh agent may touch, as text, counters and comments left out. */
async function hostState(): Promise<string> {
  // One shell in the namespace runs the commands one after another, each one's stdout behind a separator: a snapshot
  // was nine processes (each ~10 ms of CPU here, more spawned from the test's worker), and the test polls it.
  const script = stateCommands.map((argv) => `printf '\\001${stateMark}\\n'; ${argv.join(" ")} 2>/dev/null`).join("; ");
  const outputs = (await runCommand(inNamespace(namespace, ["sh", "-c", script]))).stdout.split(stateSeparator).slice(1);
  if (outputs.length !== stateCommands.length) throw new Error(`host state: ${outputs.length} outputs for ${stateCommands.length} commands`);
  const parts: string[] = [];
  for (const [index, argv] of stateCommands.entries()) {
    const text = outputs[index]
      .split("\n")
      .filter((line) => !line.startsWith("#"))
      .map((line) => line.replace(/\[\d+:\d+\]/g, "").replace(/counter packets \d+ bytes \d+/g, "counter"))
      .join("\n");
    // nft lists chains in the order they were made (with iptables-nft, a chain emptied and made again moves to the
    // end of its table): the lines are compared, not their order.
    parts.push(`$ ${argv.join(" ")}\n${argv[0] === "nft" ? text.split("\n").map((line) => line.trim()).sort().join("\n") : text}`);
  }
  return parts.join("\n");
}

type Intercept = "nftables" | "iptables";

function agentArgs(node: string, dataDir: string, port: number, intercept: Intercept): string[] {
  return [
    "agent", "--insecure", "--node", node, "--hub", "nats://127.0.0.1:7422", "--data", dataDir,
    "--nats-listen", `127.0.0.1:${port}`, "--monitor-listen", `127.0.0.1:${port + 1}`, "--metrics-listen", "off",
    "--dns", "169.254.96.16:53", "--upstream", "127.0.0.1:1", "--intercept", intercept, "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off",
  ];
}

/** Where the kernel's rule for web (198.19.0.10:80) sends it, as the backend writes it; undefined without one. */
async function ruleOfWeb(intercept: Intercept): Promise<string | undefined> {
  if (intercept === "nftables") {
    const rules = await runCommand(inNamespace(namespace, ["nft", "list", "map", "ip", "leafmesh", "tcp_services"]));
    return /198\.19\.0\.10 \. 80 : (127\.[\d.]+ \. \d+)/.exec(rules.stdout)?.[1];
  }
  const rules = await runCommand(inNamespace(namespace, ["iptables-save", "-t", "nat"]));
  // The jumps go in after the chain's restore, one at a time: the rule counts once both are there.
  if (!rules.stdout.includes("-A OUTPUT -j LEAFMESH-SERVICES") || !rules.stdout.includes("-A PREROUTING -j LEAFMESH-SERVICES")) return undefined;
  // A sync ends with ip6tables' filter jumps (IPv6 after IPv4): the host state is read once the whole sync is in.
  const ip6 = await runCommand(inNamespace(namespace, ["ip6tables-save", "-t", "filter"]));
  if (iptablesRejectHooks.some((hook) => !ip6.stdout.includes(`-A ${hook} -j LEAFMESH-REJECT`))) return undefined;
  return /-A LEAFMESH-SERVICES -d 198\.19\.0\.10\/32 .*--dport 80 .*--to-destination (127\.[\d.]+:\d+)/.exec(rules.stdout)?.[1];
}

describe.sequential("the host state an agent leaves", () => {
  beforeAll(async () => {
    lab = await createLab({ prefix: "lmhs-" });
    namespace = await lab.namespace("n1");
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10", endpoints: [{ ip: "127.0.0.1", node: "edge-a" }] }));
    launch("hub-1", ["hub", "--name", "hub-1", "--insecure", "--data", tempDir(), "--listen", "127.0.0.1:4222", "--leaf-listen", "127.0.0.1:7422", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--manifests", manifests], "", "", namespace);
  }, 60_000);

  afterAll(async () => {
    await stopAllProcesses();
    await lab?.teardown();
  }, 60_000);

  it.each(["nftables", "iptables"] as const)("%s: refuses a second intercepting agent by name, survives a kill -9, and a clean stop leaves the host as it was", { timeout: 150_000 }, async (intercept) => {
    if (intercept === "iptables") {
      // iptables-nft makes a table's built-in chains with its first rule and never removes them (nor does any tool
      // that adds one: kube-proxy, docker): the host is taken as one where iptables was used, empty chains and all.
      // The same for ip6tables, which the agent uses for IPv6 cluster IPs.
      for (const tool of ["iptables", "ip6tables"]) {
        for (const [table, chain] of [["nat", "OUTPUT"], ["nat", "PREROUTING"], ["filter", "INPUT"], ...iptablesRejectHooks.map((hook) => ["filter", hook])]) {
          await lab.exec(namespace, [tool, "-t", table, "-A", chain, "-j", "ACCEPT"]);
          await lab.exec(namespace, [tool, "-t", table, "-D", chain, "-j", "ACCEPT"]);
        }
      }
    }
    const before = await hostState();
    const dataA = tempDir();
    let agentA: LeafmeshProcess = launch("edge-a", agentArgs("edge-a", dataA, 5000, intercept), "", dataA, namespace);
    const ruleA = await eventually(() => ruleOfWeb(intercept), 60_000, "edge-a's rule for web");
    const during = await hostState();
    // IPv6 interception is on (the namespace has IPv6): its listener prefix is routed on lo, its address there.
    expect(during).toMatch(/local fd1e:af3e:5400::\/64 dev lo .*proto 76/);
    expect(during).toContain("inet6 fd1e:af3e:5400::1/128");

    // A second agent with a data directory of its own, in the same namespace.
    const second = await runCommand(inNamespace(namespace, [nodeBinary, cliPath, ...agentArgs("edge-b", tempDir(), 5100, intercept)]), { timeoutMs: 30_000 });
    expect(second.code).toBe(2);
    expect(second.stderr).toContain(`cluster-IP interception in this network namespace is held by leafmesh agent edge-a (pid ${agentA.child.pid}, --data ${dataA})`);
    // Before the lock it replaced edge-a's rules with its own, and its stop removed them all: edge-a was left with none.
    expect(await ruleOfWeb(intercept)).toBe(ruleA);
    expect(await hostState()).toBe(during);
    expect(agentA.child.exitCode).toBeNull();

    // A crash leaves its rules; the next start takes them over, and the lock the kernel released with the process.
    await agentA.kill();
    expect(await ruleOfWeb(intercept)).toBe(ruleA);
    agentA = launch("edge-a", agentArgs("edge-a", dataA, 5000, intercept), "", dataA, namespace);
    try {
      await eventually(async () => agentA.output().includes("agent ready") && (await ruleOfWeb(intercept)) === ruleA, 60_000, "edge-a started again, its rule back");
      // Its rule for web back is not yet all of its state back: a full run of 2026-12-07 read the state a moment
      // early, one hook's jump to LEAFMESH-SERVICES short. Waited for, then compared whole.
      await eventually(async () => (await hostState()) === during, 30_000, "edge-a's whole state back").catch(() => undefined);
      expect(await hostState()).toBe(during);
    } finally {
      // Stopped whatever failed above: left running, it held the namespace's interception and the next tests waited on it.
      expect(await agentA.stop()).toBe(0);
    }
    expect(await hostState()).toBe(before);
  });

  it.each([
    ["iptables", "nftables"],
    ["nftables", "iptables"],
  ] as const)("a kill -9 under %s, then a start under %s: the crashed run's rules go too", { timeout: 150_000 }, async (first, then) => {
    const before = await hostState();
    const dataA = tempDir();
    const crashed = launch("edge-a", agentArgs("edge-a", dataA, 5000, first), "", dataA, namespace);
    await eventually(() => ruleOfWeb(first), 60_000, `edge-a's ${first} rule for web`);
    await crashed.kill();
    // The operator changes --intercept and starts the node again: the dead run's rules would DNAT beside the new ones.
    const next = launch("edge-a", agentArgs("edge-a", dataA, 5000, then), "", dataA, namespace);
    await eventually(async () => next.output().includes("agent ready") && (await ruleOfWeb(then)) !== undefined, 60_000, `edge-a's ${then} rule for web`);
    expect(await ruleOfWeb(first)).toBeUndefined();
    expect(await next.stop()).toBe(0);
    expect(await hostState()).toBe(before);
  });
});
