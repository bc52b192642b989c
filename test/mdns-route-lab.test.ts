/**
 * mdnsRouteProblem (services/tunnel/mdns-route.ts) against the kernel's routing in a namespace: a LAN
 * address and no route for 224.0.0.251 (no default route, no multicast route) is a problem, said; with
 * `ip route add 224.0.0.0/4 dev eth0` there is none. Before, an agent on such a LAN found no neighbour by
 * mDNS and said nothing. Root, under the lab lock.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, inNamespace, runCommand, type Lab } from "../lab/netns.ts";
import { writeFileSync } from "node:fs";
import { launch, nodeBinary, stopAllProcesses, tempDir } from "./support/processes.ts";
import { eventually } from "./support/ports.ts";
import { testPsk } from "./support/tunnel-fabric.ts";

const root = process.getuid?.() === 0;
const moduleUrl = new URL(join("..", "services", "tunnel", "mdns-route.ts"), import.meta.url).href;
let lab: Lab;
let host: string;

beforeAll(async () => {
  if (!root) return;
  lab = await createLab({ prefix: "lmmdr-" });
  const bridge = await lab.bridge("br");
  host = await lab.namespace("a");
  await lab.link({ namespace: host, bridge, address: "198.18.242.21/24" });
}, 60_000);

afterAll(async () => {
  await stopAllProcesses();
  await lab?.teardown();
}, 60_000);

const problemIn = async (namespace: string) => {
  const script = `const { mdnsRouteProblem } = await import(${JSON.stringify(moduleUrl)}); console.log(JSON.stringify((await mdnsRouteProblem()) ?? null));`;
  const result = await runCommand(inNamespace(namespace, [nodeBinary, "--input-type=module", "-e", script]), { timeoutMs: 20_000 });
  if (result.code !== 0) throw new Error(result.stderr);
  return JSON.parse(result.stdout) as string | null;
};

describe("whether a host can send mDNS", () => {
  it("says no route to 224.0.0.251 on a LAN without a default or multicast route, and nothing once there is one", async () => {
    if (!root) throw new Error("this test builds network namespaces: run it as root (CI does), under flock /tmp/leafmesh-lab.lock");
    expect(await problemIn(host)).toBe("no route to 224.0.0.251 (ENODEV)");
    // The agent on that host says so (its hub is nowhere: the tunnel starts all the same).
    const psk = join(tempDir("leafmesh-mdns-route-"), "swarm.key");
    writeFileSync(psk, testPsk, { mode: 0o600 });
    const agent = launch("edge-a", ["agent", "--insecure", "--psk", psk, "--node", "edge-a", "--hub", "nats://198.18.242.99:7422", "--data", tempDir(), "--metrics-listen", "off"], "", "", host);
    await eventually(() => agent.output().includes("mDNS cannot send from this host, no route to 224.0.0.251 (ENODEV)"), 30_000, "the agent to say it").catch((error: Error) => {
      throw new Error(`${error.message}\n${agent.output().slice(-3000)}`);
    });
    await agent.stop();
    await lab.route(host, "224.0.0.0/4", { device: "eth0" });
    expect(await problemIn(host)).toBeNull();
  });
});
