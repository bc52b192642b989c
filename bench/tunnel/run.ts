/**
 * Tunnel benchmark (issue 6), between lab namespaces in one run (root):
 * - raw TCP on the LAN and raw TCP across the NATs (the baselines),
 * - leafmesh direct (LAN, mDNS), hole-punched (port-restricted → full cone) and
 *   relayed (symmetric ↔ symmetric, leaf → hub → leaf) streams,
 * - plain NATS publish/subscribe and request/reply on the same leaf → hub → leaf path.
 * For each: throughput (128 MiB to a sink, median of 3 runs interleaved with the
 * baselines, with the CPU both ends used per MiB), RTT p50/p99 (200 one-byte echoes on
 * one stream) and time to first byte of a new stream (p50 over 30).
 * Goals (the issue): direct and hole-punched ≥ 80% of raw TCP; relayed ≥ 70% of plain NATS.
 *
 * Run: `node bench/tunnel/run.ts` (or `npm run bench -- tunnel`).
 */
import { startTunnelLab, type TunnelLab } from "../../lab/tunnel-lab.ts";
import { percentile, ratio, writeTables, type BenchTable } from "../table.ts";

const bytes = Number(process.env.LEAFMESH_BENCH_TUNNEL_BYTES ?? 128 * 1024 * 1024);
/** Throughput runs per path, interleaved with their baselines (the machine is shared and noisy): the median is reported. */
const rounds = Number(process.env.LEAFMESH_BENCH_TUNNEL_ROUNDS ?? 3);

interface Measured {
  /** Median over the rounds. */
  mbps: number;
  /** CPU of the sending and receiving processes (user + system) per MiB moved, median over the rounds. */
  cpuMsPerMiB: number;
  rtt: number[];
  firstByte?: number[];
}

async function until(lab: TunnelLab, from: string, to: string, kind: string): Promise<void> {
  // Bounded: 60 polls of 500 ms.
  for (let attempt = 0; attempt < 60; attempt++) {
    const reply = await lab.call(from, { op: "roundtrip", node: to, bytes: 1024 }).catch(() => undefined);
    if (reply?.ok && reply.kind === kind) return;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new Error(`${from} → ${to} never became ${kind}`);
}

async function checked(lab: TunnelLab, agent: string, request: Record<string, unknown>): Promise<Record<string, unknown>> {
  const reply = await lab.call(agent, request, 180_000);
  if (!reply.ok) throw new Error(`${String(request.op)} on ${agent} failed: ${JSON.stringify(reply).slice(0, 300)}`);
  return reply as unknown as Record<string, unknown>;
}

const cpuOf = async (lab: TunnelLab, agent: string) => (await checked(lab, agent, { op: "cpu" })).cpuMs as number;

const median = (values: number[]) => percentile(values, 50);

/** One path: `rounds` throughput runs (each with the CPU both ends used), then latency once. */
interface Path {
  from: string;
  /** The process at the far end (the receiving agent, or the one serving the raw sink). */
  to: string;
  throughput: Record<string, unknown>;
  latency: Record<string, unknown>;
  samples: { mbps: number; cpuMsPerMiB: number }[];
}

async function throughputOnce(lab: TunnelLab, path: Path): Promise<void> {
  const before = (await cpuOf(lab, path.from)) + (await cpuOf(lab, path.to));
  const reply = await checked(lab, path.from, { ...path.throughput, bytes });
  const after = (await cpuOf(lab, path.from)) + (await cpuOf(lab, path.to));
  path.samples.push({ mbps: reply.mbps as number, cpuMsPerMiB: (after - before) / (bytes / 1024 / 1024) });
}

async function measure(lab: TunnelLab, path: Path): Promise<Measured> {
  const latency = await checked(lab, path.from, path.latency);
  return {
    mbps: median(path.samples.map((sample) => sample.mbps)),
    cpuMsPerMiB: median(path.samples.map((sample) => sample.cpuMsPerMiB)),
    rtt: latency.rtt as number[],
    firstByte: latency.firstByte as number[] | undefined,
  };
}

export async function runTunnelBench(): Promise<BenchTable> {
  const lab = await startTunnelLab({
    prefix: "lmtnb-",
    // As a mesh runs: node certificates, so direct streams go over TLS (services/tunnel/tls-streams.ts).
    secured: true,
    sites: [
      { name: "la", nat: "full-cone", hosts: 2 },
      { name: "pa", nat: "port-restricted" },
      { name: "pb", nat: "full-cone" },
      { name: "ra", nat: "symmetric" },
      { name: "rb", nat: "symmetric" },
    ],
  });
  try {
    const lanPeer = lab.nat.sites[0].hosts[1].address;
    const punchRouter = lab.nat.sites[2].routerWanAddress; // full cone: DNAT to its host
    await until(lab, "lah1", "lah2", "direct");
    await until(lab, "pah1", "pbh1", "hole-punched");
    await until(lab, "rah1", "rbh1", "relayed");
    await checked(lab, "rbh1", { op: "nats-serve" });
    const stream = (from: string, to: string, target: { host: string } | { node: string }): Path => ({
      from,
      to,
      throughput: { op: "throughput", ...target },
      latency: { op: "latency", ...target },
      samples: [],
    });
    const paths = {
      rawLan: stream("lah1", "lah2", { host: lanPeer }),
      direct: stream("lah1", "lah2", { node: "lah2" }),
      rawWan: stream("pah1", "pbh1", { host: punchRouter }),
      punched: stream("pah1", "pbh1", { node: "pbh1" }),
      plainNats: { from: "rah1", to: "rbh1", throughput: { op: "nats-throughput", node: "rbh1" }, latency: { op: "nats-latency", node: "rbh1" }, samples: [] } as Path,
      relayed: stream("rah1", "rbh1", { node: "rbh1" }),
    };
    // One run per path first, not counted: the first run of every path in a fresh process was always the slowest (JIT, TCP windows).
    for (const path of Object.values(paths)) await checked(lab, path.from, { ...path.throughput, bytes });
    // Interleaved: each path next to its baseline in every round, so a slow moment of the machine hits both.
    for (let round = 0; round < rounds; round++) for (const path of Object.values(paths)) await throughputOnce(lab, path);
    const rawLan = await measure(lab, paths.rawLan);
    const direct = await measure(lab, paths.direct);
    const rawWan = await measure(lab, paths.rawWan);
    const punched = await measure(lab, paths.punched);
    const plainNats = await measure(lab, paths.plainNats);
    const relayed = await measure(lab, paths.relayed);

    const row = (name: string, path: string, measured: Measured, baseline: Measured, baselineName: string) => [
      name,
      path,
      measured.mbps,
      percentile(measured.rtt, 50),
      percentile(measured.rtt, 99),
      measured.firstByte ? percentile(measured.firstByte, 50) : "n/a",
      measured.cpuMsPerMiB,
      measured === baseline ? "baseline" : `${ratio(measured.mbps, baseline.mbps)} of ${baselineName}`,
    ];
    return {
      title: "tunnel: streams between lab namespaces (throughput, RTT, time to first byte)",
      columns: ["path", "between", "MB/s", "RTT p50 ms", "RTT p99 ms", "first byte p50 ms", "CPU ms per MiB (both ends)", "throughput vs baseline"],
      rows: [
        row("raw TCP (LAN)", "lah1 → lah2", rawLan, rawLan, ""),
        row("leafmesh direct", "lah1 → lah2 (mDNS)", direct, rawLan, "raw LAN"),
        row("raw TCP (across NATs)", "pah1 → pb router (DNAT)", rawWan, rawWan, ""),
        row("leafmesh hole-punched", "pah1 (NAT3) → pbh1 (NAT1)", punched, rawWan, "raw across NATs"),
        row("plain NATS pub/sub", "rah1 → hub → rbh1 (leafs)", plainNats, plainNats, ""),
        row("leafmesh relayed", "rah1 (NAT4) → hub → rbh1 (NAT4)", relayed, plainNats, "plain NATS"),
      ],
      notes: [
        `${(bytes / 1024 / 1024).toFixed(0)} MiB per throughput run, into a sink that answers with its byte count; median of ${rounds} runs after one uncounted warm-up run, each path interleaved with its baseline; RTT over 200 one-byte echoes on one stream; first byte = new stream + one echoed byte, 30 times.`,
        "CPU = user + system time of the sending and the receiving process (agent and sink, or NATS client) per MiB; the nats-servers between them are not counted (they carry the same bytes for plain NATS and the relay).",
        "Goals (issue 6): direct and hole-punched ≥ 0.80× raw TCP on the same path; relayed ≥ 0.70× plain NATS on the same leaf → hub → leaf path.",
        "The lab runs secured (node certificates): leafmesh streams each run under a TLS 1.3 session of their own (services/tunnel/tls-streams.ts): direct over a TCP connection to the peer, hole-punched over a TCP connection punched for the stream ahead of time, relayed over a relay channel of their own. The first stream of a hole-punched pair (no spare punched yet) runs noise + yamux over the pair's punched libp2p connection. Raw TCP and plain NATS are unencrypted.",
        "leafmesh's receiving agent splices each stream to its target (a second local TCP hop); raw TCP goes straight to the sink.",
        "Plain NATS RTT is request/reply through the same leafs and hub; it has no first-byte figure (no stream to open).",
        "One machine, 2 cores: every namespace shares them, so absolute numbers are far below a real WAN's; compare the ratios.",
      ],
    };
  } finally {
    await lab.teardown();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const table = await runTunnelBench();
  const written = writeTables("tunnel", [table]);
  console.log(written.markdown);
}
