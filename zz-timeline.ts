import { writeManifest, manyServices } from "./test/support/manifests.ts";
import { launch, startHubProcess, stopAllProcesses, tempDir } from "./test/support/processes.ts";
import { freePort } from "./test/support/ports.ts";
const manifests = tempDir();
writeManifest(manifests, "many.yaml", manyServices(10_000));
const hub = await startHubProcess({ name: "hub-1", manifests });
// wait for the hub to have written everything
await new Promise((r) => setTimeout(r, 8000));
for (let run = 0; run < Number(process.argv[2] ?? 2); run++) {
  const client = await freePort(), monitor = await freePort(), dns = await freePort();
  const dataDir = tempDir("zz-agent-");
  const t0 = Date.now();
  const agent = launch("edge-a", ["agent", "--node", "edge-a", "--hub", hub.leafUrl, "--data", dataDir, "--nats-listen", `127.0.0.1:${client}`, "--monitor-listen", `127.0.0.1:${monitor}`, "--metrics-listen", "off", "--dns", `127.0.0.1:${dns}`, "--upstream", "127.0.0.1:9", "--insecure", "--log-level", "debug"], `nats://127.0.0.1:${client}`, dataDir);
  await new Promise((r) => setTimeout(r, 4000));
  const lines = agent.output().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  for (const l of lines) if (l.actor !== "fabric" || /ready|link up|starting/.test(l.msg)) console.log(String(Date.parse(l.time) - t0).padStart(6), l.actor ?? "", l.msg.slice(0, 100));
  await agent.stop();
  console.log("-----");
}
await stopAllProcesses();
