/**
 * Fabric benchmark (issues 2 and 17): the catalog at scale. 10,000 Services and
 * 10,000 EndpointSlices (3 endpoints each), leafmesh beside plain NATS on the
 * same nats-server configs (bench/fabric/scenario.ts says what each row times),
 * and the same at 1,000 services for the node's memory at that size.
 *
 * Run: `node bench/fabric/run.ts` (or `npm run bench -- fabric`).
 * LEAFMESH_BENCH_SERVICES sets the large size, LEAFMESH_BENCH_CHANGES the
 * number of single changes; LEAFMESH_BENCH_PROFILE=1 writes CPU profiles and
 * flame graphs of the hub and agent (bench/profile/children.ts) and a heap
 * summary of the loaded agent.
 */
import { readFileSync } from "node:fs";
import { percentile, ratio, writeTables, type BenchTable } from "../table.ts";
import { profileChildren, profiling, summarizeProfiles } from "../profile/children.ts";
import { normalisedCatalog } from "./catalog.ts";
import { measureLeafmesh, measurePlain, type LeafmeshResult, type PlainResult } from "./scenario.ts";

const serviceCount = Number(process.env.LEAFMESH_BENCH_SERVICES ?? 10_000);
const smallCount = 1_000;
const changeCount = Number(process.env.LEAFMESH_BENCH_CHANGES ?? 1_000);

const ms = (value: number) => Math.round(value);
const p = (values: number[], q: number) => Math.round(percentile(values, q) * 100) / 100;
const mib = (value: number) => Math.round(value);

export async function runFabricBench(): Promise<BenchTable> {
  const entries = normalisedCatalog(serviceCount);
  const plain: PlainResult = await measurePlain(entries, changeCount);
  const profileDir = profileChildren(`fabric-${serviceCount}`);
  const leafmesh: LeafmeshResult = await measureLeafmesh(serviceCount, entries, changeCount, {
    // The heap of the loaded agent, where its memory sits (a snapshot takes seconds: only when profiling).
    onLoaded: profiling ? async (pid) => {
      process.kill(pid, "SIGUSR2");
      await new Promise((resolve) => setTimeout(resolve, 15_000));
    } : undefined,
  });
  summarizeProfiles(profileDir);
  const small = await measureLeafmesh(smallCount, normalisedCatalog(smallCount), 100);
  const size = serviceCount.toLocaleString("en-US");
  return {
    title: `Fabric: catalog of ${size} Services + ${size} EndpointSlices (3 endpoints each)`,
    columns: ["metric", "leafmesh", "plain NATS (same servers)", "leafmesh / plain", "goal (issue 17)"],
    rows: [
      [`${size} services written at the hub, from a cold start (ms)`, ms(leafmesh.writeMs), ms(plain.writeMs), ratio(leafmesh.writeMs, plain.writeMs), "≤ 1.5×"],
      [`  of which plain NATS's 64 concurrent puts alone (ms)`, "—", ms(plain.putsMs), "—", ""],
      [`  plain NATS, the same puts pipelined as leafmesh's hub writes them (256 in flight, bus/kv-puts.ts; ms)`, "—", ms(plain.pipelinedPutsMs), "—", ""],
      [`  hub process CPU until written (ms)`, ms(leafmesh.hubCpuMs), "—", "—", ""],
      [`fresh node holds the catalog (ms; leafmesh: controller, traffic and DNS; plain: a KV watcher on the mirror read it all)`, ms(leafmesh.nodeHoldsMs), ms(plain.clientHoldsMs), ratio(leafmesh.nodeHoldsMs, plain.clientHoldsMs), "< 2,000 ms, ≤ 3×"],
      [`  floor: a fresh Node process on nats.js, no leafmesh: its own leaf, the mirror, a KV watch, JSON.parse of each value (bench/fabric/node-floor.ts; ms)`, ms(leafmesh.floorHoldsMs), ms(plain.clientHoldsMs), ratio(leafmesh.floorHoldsMs, plain.clientHoldsMs), ""],
      [`  leafmesh's own share: the fresh node against the floor (this row's ratio: leafmesh / the floor)`, ms(leafmesh.nodeHoldsMs), "—", ratio(leafmesh.nodeHoldsMs, leafmesh.floorHoldsMs), ""],
      [`  its leaf's mirror holds every object (ms)`, ms(leafmesh.leafHoldsMs), ms(plain.leafHoldsMs), ratio(leafmesh.leafHoldsMs, plain.leafHoldsMs), ""],
      [`  controller announced every object / traffic listens for every service / DNS answers the last (ms)`, `${ms(leafmesh.controllerHoldsMs)} / ${ms(leafmesh.trafficHoldsMs)} / ${ms(leafmesh.dnsAnswersMs)}`, "—", "—", ""],
      [`  agent process CPU until it holds the catalog (ms)`, ms(leafmesh.agentCpuLoadMs), "—", "—", ""],
      [`single change hub → node, p50 (ms, ${changeCount} changes)`, p(leafmesh.latencies, 50), p(plain.latencies, 50), ratio(percentile(leafmesh.latencies, 50), percentile(plain.latencies, 50)), "keep (0.74 ms)"],
      [`single change hub → node, p99 (ms)`, p(leafmesh.latencies, 99), p(plain.latencies, 99), ratio(percentile(leafmesh.latencies, 99), percentile(plain.latencies, 99)), "keep (3.8 ms)"],
      [`agent RSS at ${size} services: leafmesh process (MiB; just loaded / after the changes / at rest: the hub put them back, no change for 12 s)`, `${mib(leafmesh.rssLoadedMiB)} / ${mib(leafmesh.rssMiB)} / ${mib(leafmesh.rssAtRestMiB)}`, "—", "—", "≤ 150 MiB"],
      [`agent RSS at ${smallCount.toLocaleString("en-US")} services: leafmesh process (MiB; just loaded / after 100 changes / at rest, as above)`, `${mib(small.rssLoadedMiB)} / ${mib(small.rssMiB)} / ${mib(small.rssAtRestMiB)}`, "—", "—", "≤ 80 MiB"],
      [`  floor: RSS of the fresh Node process holding the ${size} services, parsed (MiB; just loaded / at rest after one full collection)`, `${mib(leafmesh.floorRssMiB)} / ${mib(leafmesh.floorRssAtRestMiB)}`, "—", "—", ""],
      [`  floor: the same at ${smallCount.toLocaleString("en-US")} services (MiB)`, `${mib(small.floorRssMiB)} / ${mib(small.floorRssAtRestMiB)}`, "—", "—", ""],
      ["agent RSS: its nats-server (MiB)", mib(leafmesh.serverRssMiB), mib(plain.serverRssMiB), ratio(leafmesh.serverRssMiB, plain.serverRssMiB), ""],
      [`fresh node holds ${smallCount.toLocaleString("en-US")} services (ms)`, ms(small.nodeHoldsMs), "—", "—", ""],
    ],
    notes: [
      "leafmesh: `leafmesh hub --manifests` (20 YAML files parsed, validated, written under the publisher lease) and a fresh `leafmesh agent --dns` (controller, DNS, traffic with one listener per service port, proxier without interception; no tunnel). Times count from launching the process: Node's start and the nats-server's are in them, as plain NATS's rows count its nats-server's start.",
      "plain NATS: the same nats-server configs with no leafmesh process: 64 concurrent KV puts of the normalised objects (nats.js kv.put: a request per put), the baseline of the ratio; a KV mirror on a fresh leaf and a KV watcher on it. The pipelined row puts the same objects again the way leafmesh's hub writes since 2026-12-04 (a core publish per put with its own reply subject, JetStream's ack settles it): what NATS itself allows, after the baseline's mirror and changes were measured.",
      "Single changes: a KV put at the hub, timed until the agent's controller announces it on its bus (leafmesh) or the mirror's watcher sees it (plain).",
      "Nothing polls the leafmesh processes while they load: the benchmark follows their bus events, the servers' stream info and one DNS query every 20 ms.",
      ...(leafmesh.missedEvents > 0 ? [`The agent sent ${leafmesh.missedEvents} catalog events before this benchmark's subscription was in place; its own count said it held every object, and the last event's time is the controller's.`] : []),
    ],
  };
}

if (import.meta.main) {
  const table = await runFabricBench();
  const written = writeTables("fabric", [table]);
  console.log(readFileSync(written.markdown, "utf8"));
  process.exit(0);
}
