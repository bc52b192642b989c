/**
 * Curve (c): cost against concurrent relayed streams. Two secured agents on
 * loopback whose only path is the relay through the hub (`--tunnel-ways relay`,
 * as test/relay-kill.test.ts forces it: each stream a relay channel of its own
 * under its own TLS session), N downloads at once through edge-a's cluster-IP
 * proxy listener from a backend on edge-b's side. Beside it, plain NATS pub/sub
 * on the same leaf → hub → leaf servers: N subjects at once, each carrying the
 * same bytes as one stream (a 1 MiB flush window per publisher, as the tunnel
 * benchmark's plain row has).
 *
 * CPU counted: leafmesh — both agents, their leaf nats-servers, the hub's
 * nats-server and hub process; plain — this process (both clients) and the
 * three nats-servers. The download client and backend are not counted (plain
 * NATS's ends are its clients).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import { silentLogger } from "../../lib/log.ts";
import { NatsServerSupervisor } from "../../nats/supervisor.ts";
import { renderHubConfig, renderLeafConfig, toLeafUrl } from "../../nats/render.ts";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { download, startDownloadBackend } from "../../test/support/downloads.ts";
import { sampleService, writeManifest } from "../../test/support/manifests.ts";
import { freePort } from "../../test/support/ports.ts";
import { proxyListener, startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "../../test/support/processes.ts";
import { cpuMs, rssMiB } from "../fabric/process-stats.ts";

export interface RelayPoint {
  streams: number;
  bytesPerStream: number;
  /** Downloads that arrived whole, of `streams`. */
  whole: number;
  mbps: number;
  cpuMsPerMiB: number;
  agentCpuMsPerMiB: number;
  hubCpuMsPerMiB: number;
  /** Peak RSS during the run, MiB. */
  agentRssMiB: number;
  hubServerRssMiB: number;
  plainMbps: number;
  plainCpuMsPerMiB: number;
  plainHubServerRssMiB: number;
  plainDelivered: number;
}

const serverPid = (dataDir: string) => Number(readFileSync(join(dataDir, "nats-server.pid"), "utf8"));

/** Bytes per stream: `totalBytes` shared out, at least `minBytes` each. */
export const bytesPerStream = (streams: number, totalBytes: number, minBytes: number) => Math.max(minBytes, Math.floor(totalBytes / streams / 1024) * 1024);

export async function measureRelayCurve(counts: number[], totalBytes: number, minBytes: number): Promise<RelayPoint[]> {
  const leafmesh = await measureLeafmeshRelay(counts, totalBytes, minBytes);
  const plain = await measurePlainStreams(counts, totalBytes, minBytes);
  return leafmesh.map((point, index) => ({ ...point, ...plain[index] }));
}

type LeafmeshPart = Omit<RelayPoint, "plainMbps" | "plainCpuMsPerMiB" | "plainHubServerRssMiB" | "plainDelivered">;

async function measureLeafmeshRelay(counts: number[], totalBytes: number, minBytes: number): Promise<LeafmeshPart[]> {
  const keys = join(tempDir("leafmesh-bench-scale-"), "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  const backendPort = await freePort();
  const manifests = tempDir();
  writeManifest(manifests, "files.yaml", sampleService({ name: "files", clusterIP: "198.19.0.20", endpoints: [{ ip: "127.0.0.1", node: "edge-b" }], backendPort }));
  let backend = await startDownloadBackend(backendPort, 1024);
  try {
    const hub = await startHubProcess({ name: "hub-1", manifests, keys });
    const tunnelArgs = ["--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off", "--tunnel-ways", "relay"];
    const [edgeA, edgeB] = await Promise.all(["edge-a", "edge-b"].map((node) => startAgentProcess({ node, hubs: [hub.leafUrl], keys, extraArgs: tunnelArgs })));
    const port = await proxyListener(edgeA, "demo/files:http/TCP");
    // The relay path comes up first (not part of a point).
    for (let attempt = 0; (await download(port, 1024, 15_000)) !== "whole"; attempt++) {
      if (attempt > 30) throw new Error("no download through the relay");
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const agentPids = [edgeA.child.pid, edgeB.child.pid, serverPid(edgeA.dataDir), serverPid(edgeB.dataDir)];
    const hubPids = [hub.child.pid, serverPid(hub.dataDir)];
    const sum = (pids: (number | undefined)[]) => pids.reduce<number>((total, pid) => total + cpuMs(pid), 0);
    const points: LeafmeshPart[] = [];
    for (const streams of counts) {
      const bytes = bytesPerStream(streams, totalBytes, minBytes);
      console.error(`scale: ${streams} relayed streams of ${bytes} bytes`);
      backend.kill();
      backend = await startDownloadBackend(backendPort, bytes);
      const peak = { agent: 0, hub: 0 };
      const sample = () => {
        peak.agent = Math.max(peak.agent, rssMiB(edgeA.child.pid), rssMiB(edgeB.child.pid));
        peak.hub = Math.max(peak.hub, rssMiB(hubPids[1]));
      };
      const sampler = setInterval(sample, 100);
      const agentBefore = sum(agentPids);
      const hubBefore = sum(hubPids);
      const started = performance.now();
      const outcomes = await Promise.all(Array.from({ length: streams }, () => download(port, bytes, 300_000)));
      const elapsedS = (performance.now() - started) / 1000;
      clearInterval(sampler);
      sample();
      const whole = outcomes.filter((outcome) => outcome === "whole").length;
      const mib = (whole * bytes) / 1024 / 1024;
      const agentCpu = sum(agentPids) - agentBefore;
      const hubCpu = sum(hubPids) - hubBefore;
      points.push({
        streams, bytesPerStream: bytes, whole,
        mbps: (whole * bytes * 8) / 1e6 / elapsedS,
        cpuMsPerMiB: (agentCpu + hubCpu) / mib, agentCpuMsPerMiB: agentCpu / mib, hubCpuMsPerMiB: hubCpu / mib,
        agentRssMiB: peak.agent, hubServerRssMiB: peak.hub,
      });
    }
    return points;
  } finally {
    backend.kill();
    await stopAllProcesses();
  }
}

type PlainPart = Pick<RelayPoint, "plainMbps" | "plainCpuMsPerMiB" | "plainHubServerRssMiB" | "plainDelivered">;

async function measurePlainStreams(counts: number[], totalBytes: number, minBytes: number): Promise<PlainPart[]> {
  const dir = tempDir();
  const [client, leaf, monitor] = await Promise.all([freePort(), freePort(), freePort()]);
  const hub = new NatsServerSupervisor({
    name: "plain-hub", dataDir: join(dir, "hub"), monitor: { host: "127.0.0.1", port: monitor }, log: silentLogger(),
    configText: renderHubConfig({ serverName: "plain-hub", storeDir: join(dir, "hub/js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }),
  });
  const leaves = await Promise.all(["a", "b"].map(async (name) => {
    const [leafClient, leafMonitor] = await Promise.all([freePort(), freePort()]);
    const server = new NatsServerSupervisor({
      name: `plain-leaf-${name}`, dataDir: join(dir, name), monitor: { host: "127.0.0.1", port: leafMonitor }, log: silentLogger(),
      configText: renderLeafConfig({ serverName: `plain-leaf-${name}`, domain: `plain-${name}`, storeDir: join(dir, name, "js"), client: { host: "127.0.0.1", port: leafClient }, monitor: { host: "127.0.0.1", port: leafMonitor }, upstreams: [toLeafUrl(`nats://127.0.0.1:${leaf}`)] }),
    });
    return { server, url: `nats://127.0.0.1:${leafClient}` };
  }));
  try {
    await hub.start();
    await Promise.all(leaves.map((entry) => entry.server.start()));
    const publisher = await connect({ servers: leaves[0].url });
    const subscriber = await connect({ servers: leaves[1].url });
    subscriber.subscribe("bench.ready", { callback: (_error, message) => void message.respond(new Uint8Array(0)) });
    await subscriber.flush();
    for (let attempt = 0; !(await publisher.request("bench.ready", new Uint8Array(0), { timeout: 500 }).then(() => true, () => false)); attempt++) {
      if (attempt > 60) throw new Error("plain NATS: no path leaf a → hub → leaf b");
    }
    const pids = [hub.pid, ...leaves.map((entry) => entry.server.pid)];
    const piece = randomBytes(32 * 1024);
    const points: PlainPart[] = [];
    for (const streams of counts) {
      const bytes = bytesPerStream(streams, totalBytes, minBytes);
      const received = new Array<number>(streams).fill(0);
      let complete = 0;
      let allDone: () => void = () => undefined;
      const done = new Promise<void>((resolve) => (allDone = resolve));
      const subscriptions = Array.from({ length: streams }, (_, index) =>
        subscriber.subscribe(`bench.stream.${streams}.${index}`, {
          callback: (_error, message) => {
            received[index] += message.data.byteLength;
            if (received[index] >= bytes && received[index] - message.data.byteLength < bytes && ++complete === streams) allDone();
          },
        }),
      );
      await subscriber.flush();
      // The last subscription's interest has crossed to leaf a once a request on a subject made after it is answered.
      await publisher.request("bench.ready", new Uint8Array(0), { timeout: 5_000 });
      const peak = { hub: 0 };
      const sampler = setInterval(() => (peak.hub = Math.max(peak.hub, rssMiB(hub.pid))), 100);
      const serversBefore = pids.reduce<number>((total, pid) => total + cpuMs(pid), 0);
      const selfBefore = process.cpuUsage();
      const started = performance.now();
      await Promise.all(Array.from({ length: streams }, async (_, index) => {
        const subject = `bench.stream.${streams}.${index}`;
        for (let sent = 0, pieces = 0; sent < bytes; sent += piece.byteLength, pieces++) {
          publisher.publish(subject, sent + piece.byteLength <= bytes ? piece : piece.subarray(0, bytes - sent));
          if (pieces % 32 === 31) await publisher.flush();
        }
      }));
      await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 120_000))]);
      const elapsedS = (performance.now() - started) / 1000;
      clearInterval(sampler);
      const self = process.cpuUsage(selfBefore);
      const cpu = pids.reduce<number>((total, pid) => total + cpuMs(pid), 0) - serversBefore + (self.user + self.system) / 1000;
      const delivered = received.reduce((total, value) => total + value, 0);
      points.push({ plainMbps: (delivered * 8) / 1e6 / elapsedS, plainCpuMsPerMiB: cpu / (delivered / 1024 / 1024), plainHubServerRssMiB: Math.max(peak.hub, rssMiB(hub.pid)), plainDelivered: complete });
      for (const subscription of subscriptions) subscription.unsubscribe();
    }
    await publisher.close();
    await subscriber.close();
    return points;
  } finally {
    for (const entry of leaves) await entry.server.stop().catch(() => undefined);
    await hub.stop().catch(() => undefined);
  }
}
