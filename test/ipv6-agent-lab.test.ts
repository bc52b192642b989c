/**
 * A dual-stack Service through a real hub and a real `leafmesh agent` (cluster DNS
 * and interception), in a network namespace of its own, with each backend: curl by
 * name, which asks for AAAA and tries the IPv6 address first, is answered on the
 * IPv6 cluster IP, as an IPv6-only client is; a datagram to it too. The actors'
 * wiring, not only the actors: the proxier prepares the IPv6 listener prefix
 * before traffic binds its sockets there.
 */
import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { checkLabPrerequisites, createLab, type Lab } from "../lab/netns.ts";
import { namespaceResolver, removeNamespaceResolver } from "../lab/netns-resolver.ts";
import { eventually } from "./support/ports.ts";
import { launch, nodeBinary, stopAllProcesses, tempDir } from "./support/processes.ts";

const root = resolve(import.meta.dirname, "..");

const service = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "web", namespace: "demo" },
  spec: {
    ipFamilyPolicy: "RequireDualStack",
    ipFamilies: ["IPv6", "IPv4"],
    clusterIPs: ["fd00:99::10", "198.19.0.10"],
    ports: [
      { name: "http", port: 80, targetPort: 8080, protocol: "TCP" },
      { name: "dns", port: 53, targetPort: 8053, protocol: "UDP" },
    ],
  },
};
const slice = {
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  metadata: { name: "web-abc", namespace: "demo", labels: { "kubernetes.io/service-name": "web" } },
  addressType: "IPv4",
  endpoints: [{ addresses: ["127.0.0.1"], nodeName: "edge-a", conditions: { ready: true } }],
  ports: [
    { name: "http", port: 8080, protocol: "TCP" },
    { name: "dns", port: 8053, protocol: "UDP" },
  ],
};

describe.sequential("a dual-stack Service through a real agent", () => {
  let lab: Lab;
  let namespace = "";

  beforeAll(async () => {
    await checkLabPrerequisites([
      { tool: "curl", debianPackage: "curl" },
      { tool: "socat", debianPackage: "socat" },
    ]);
    lab = await createLab({ prefix: "lm6a-" });
    namespace = await lab.namespace("n1");
    // curl in the namespace asks the agent's DNS.
    namespaceResolver(namespace, "127.0.0.53");
    const manifests = tempDir();
    writeFileSync(`${manifests}/web.yaml`, [service, slice].map((object) => stringify(object)).join("---\n"));
    const endpoint = lab.spawn(namespace, [nodeBinary, resolve(root, "lab/traffic/endpoint-server.ts"), "--name", "ep", "--port", "8080", "--udp-port", "8053"]);
    await new Promise<void>((done) => endpoint.stdout!.once("data", () => done()));
    launch("hub-1", ["hub", "--name", "hub-1", "--insecure", "--data", tempDir(), "--listen", "127.0.0.1:4222", "--leaf-listen", "127.0.0.1:7422", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--manifests", manifests], "", "", namespace);
  }, 60_000);

  afterAll(async () => {
    await stopAllProcesses();
    await lab?.teardown();
    if (namespace) removeNamespaceResolver(namespace);
  }, 60_000);

  it.each(["nftables", "iptables"] as const)("%s: curl by name reaches the Service on its IPv6 cluster IP, UDP too; a clean stop leaves no IPv6 state", { timeout: 120_000 }, async (intercept) => {
    const data = tempDir();
    const agent = launch(
      "edge-a",
      ["agent", "--insecure", "--node", "edge-a", "--hub", "nats://127.0.0.1:7422", "--data", data, "--nats-listen", "127.0.0.1:5000", "--monitor-listen", "127.0.0.1:5001", "--metrics-listen", "off",
        "--dns", "127.0.0.53:53", "--upstream", "127.0.0.1:1", "--intercept", intercept, "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off"],
      "", data, namespace,
    );
    const curl = (...args: string[]) => lab.run(namespace, ["curl", "-g", "--http0.9", "-sS", "-m", "3", "-w", "\n%{remote_ip}", ...args]);
    try {
      // An IPv6-only client (curl -6: AAAA alone), once the agent serves the catalog.
      const only6 = await eventually(async () => {
        const result = await curl("-6", "http://web.demo.svc.cluster.local/");
        return result.code === 0 ? result.stdout : undefined;
      }, 60_000, "curl -6 by name to answer");
      expect(only6.split("\n")[0]).toBe("ep");
      // A client as curl is by default: AAAA and A, the IPv6 address tried first, and taken since it answers.
      const byName = await curl("http://web.demo.svc.cluster.local/");
      expect(byName.stdout.split("\n")[0]).toBe("ep");
      expect(byName.stdout.trim().split("\n").at(-1)).toBe("fd00:99::10");
      expect((await curl("http://198.19.0.10/")).stdout.split("\n")[0]).toBe("ep");
      const udp = await lab.run(namespace, ["socat", "-T", "3", "-", "UDP6:[fd00:99::10]:53"], { input: "ping\n", timeoutMs: 10_000 });
      expect(udp.stdout.trim()).toBe("ep:ping");
    } finally {
      // Stopped whatever happened: a second agent in this namespace would be refused the interception lock.
      expect(await agent.stop()).toBe(0);
    }
    expect(await lab.exec(namespace, ["ip", "-6", "route", "show", "table", "all", "proto", "76"])).toBe("");
    expect(await lab.exec(namespace, ["ip", "-6", "address", "show", "dev", "lo"])).not.toContain("fd1e:af3e:5400::1");
    expect(await lab.exec(namespace, ["nft", "list", "ruleset"])).not.toContain("leafmesh");
  });
});
