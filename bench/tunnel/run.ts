/**
 * Tunnel benchmark (issue 6), between lab namespaces in one run (root):
 * - raw TCP on the LAN and raw TCP across the NATs (the baselines),
 * - leafmesh direct (LAN, mDNS), hole-punched (port-restricted → full cone) and
 *   relayed (symmetric ↔ symmetric, leaf → hub → leaf) streams,
 * - plain NATS publish/subscribe and request/reply on the same leaf → hub → leaf path.
 * For each: throughput (median of 3 runs interleaved with the baselines, with the
 * CPU both ends used per MiB), RTT p50/p99 (200 one-byte echoes on one stream) and
 * time to first byte of a new stream (p50 over 30 back to back, and over 20 opened 100 ms apart).
 * Twice: on unshaped veth links (CPU-bound, 128 MiB per run), and on links shaped
 * like an edge network (1 Gbit/s LAN, 200 Mbit/s uplinks; 48 MiB).
 * Goals (the issue): direct and hole-punched ≥ 80% of raw TCP; relayed ≥ 70% of plain NATS.
 *
 * LEAFMESH_BENCH_PROFILE=1: after the unshaped runs are measured, one more transfer per
 * leafmesh path (and per Node TLS ceiling) runs with both ends' CPU profiled around it, into
 * bench/results/profiles/tunnel-<path>/ (bench/profile/transfer.ts): sender-<node> and
 * receiver-<node>, each a .cpuprofile, a text summary and a flame graph. The measured runs
 * are not profiled; LEAFMESH_BENCH_PROFILE_BYTES sets the profiled transfer's size.
 *
 * Run: `node bench/tunnel/run.ts` (or `npm run bench -- tunnel`). LEAFMESH_BENCH_TUNNEL_FIRST_BYTE_ONLY=1: the
 * unshaped links only, RTT and first byte, no throughput (a few minutes, for A/B runs of a stream's open).
 */
import type { LinkShape } from "../../lab/nat.ts";
import { startTunnelLab, type TunnelLab } from "../../lab/tunnel-lab.ts";
import { profiling } from "../profile/children.ts";
import { profileTransfer } from "../profile/transfer.ts";
import { percentile, ratio, writeTables, type BenchTable } from "../table.ts";

const unshapedBytes = Number(process.env.LEAFMESH_BENCH_TUNNEL_BYTES ?? 128 * 1024 * 1024);
/** Shaped links move ~25 MB/s across the WAN: less per run keeps the run under two minutes. */
const shapedBytes = Number(process.env.LEAFMESH_BENCH_TUNNEL_SHAPED_BYTES ?? 48 * 1024 * 1024);
/** Like an edge network: hosts on a 1 Gbit/s LAN, each site's uplink 200 Mbit/s. */
const edgeLinks: { lan: LinkShape; wan: LinkShape } = { lan: { rateMbit: 1_000 }, wan: { rateMbit: 200 } };
/** Throughput runs per path, interleaved with their baselines (the machine is shared and noisy): the median is reported. */
const rounds = Number(process.env.LEAFMESH_BENCH_TUNNEL_ROUNDS ?? 3);
/** A profiled transfer: 512 MiB lasts one to two seconds on the encrypted direct paths (several thousand samples an end), ~6 s relayed. */
const profiledBytes = Number(process.env.LEAFMESH_BENCH_PROFILE_BYTES ?? 512 * 1024 * 1024);
/** RTT and first byte on unshaped links only: no throughput runs, no shaped run. */
const firstByteOnly = process.env.LEAFMESH_BENCH_TUNNEL_FIRST_BYTE_ONLY === "1";

interface Measured {
  /** Median over the rounds. */
  mbps: number;
  /** CPU of the sending and receiving processes (user + system) per MiB moved, median over the rounds. */
  cpuMsPerMiB: number;
  rtt: number[];
  firstByte?: number[];
  /** The same, streams 100 ms apart. */
  firstByteSpaced?: number[];
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

/** One transfer of `bytes` on `path`: the lab's reply, and the CPU both ends used per MiB. */
async function transferOnce(lab: TunnelLab, path: Path, bytes: number): Promise<{ reply: Record<string, unknown>; cpuMsPerMiB: number }> {
  const before = (await cpuOf(lab, path.from)) + (await cpuOf(lab, path.to));
  const reply = await checked(lab, path.from, { ...path.throughput, bytes });
  const after = (await cpuOf(lab, path.from)) + (await cpuOf(lab, path.to));
  return { reply, cpuMsPerMiB: (after - before) / (bytes / 1024 / 1024) };
}

async function throughputOnce(lab: TunnelLab, path: Path, bytes: number): Promise<void> {
  const { reply, cpuMsPerMiB } = await transferOnce(lab, path, bytes);
  path.samples.push({ mbps: reply.mbps as number, cpuMsPerMiB });
}

/** One transfer on `path` with both ends' CPU profiled around it (LEAFMESH_BENCH_PROFILE=1). */
async function profileOnce(lab: TunnelLab, name: string, path: Path): Promise<void> {
  await profileTransfer({
    name: `tunnel-${name}`,
    call: (agent, request) => checked(lab, agent, request),
    ends: [
      { role: "sender", process: path.from },
      { role: "receiver", process: path.to },
    ],
    transfer: async () => {
      const { reply, cpuMsPerMiB } = await transferOnce(lab, path, profiledBytes);
      return `${(profiledBytes / 1024 / 1024).toFixed(0)} MiB ${path.from} → ${path.to} (${JSON.stringify(path.throughput)}, path kind ${String(reply.kind)}): ${(reply.mbps as number).toFixed(1)} MB/s under the profiler, CPU of both ends ${cpuMsPerMiB.toFixed(2)} ms per MiB`;
    },
  });
}

async function measure(lab: TunnelLab, path: Path): Promise<Measured> {
  const latency = await checked(lab, path.from, path.latency);
  return {
    mbps: median(path.samples.map((sample) => sample.mbps)),
    cpuMsPerMiB: median(path.samples.map((sample) => sample.cpuMsPerMiB)),
    rtt: latency.rtt as number[],
    firstByte: latency.firstByte as number[] | undefined,
    firstByteSpaced: latency.firstByteSpaced as number[] | undefined,
  };
}

/** Both runs: links as fast as the CPU (CPU-bound: what leafmesh costs), then shaped like an edge network (link-bound: what a user sees). */
export async function runTunnelBench(): Promise<BenchTable[]> {
  if (firstByteOnly) return [await runOnLinks(unshapedBytes)];
  return [await runOnLinks(unshapedBytes), await runOnLinks(shapedBytes, edgeLinks)];
}

async function runOnLinks(bytes: number, links?: { lan: LinkShape; wan: LinkShape }): Promise<BenchTable> {
  const lab = await startTunnelLab({
    prefix: "lmtnb-",
    links,
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
      nodeTlsLan: stream("lah1", "lah2", { host: lanPeer, tls: true } as { host: string }),
      direct: stream("lah1", "lah2", { node: "lah2" }),
      rawWan: stream("pah1", "pbh1", { host: punchRouter }),
      nodeTlsWan: stream("pah1", "pbh1", { host: punchRouter, tls: true } as { host: string }),
      punched: stream("pah1", "pbh1", { node: "pbh1" }),
      plainNats: { from: "rah1", to: "rbh1", throughput: { op: "nats-throughput", node: "rbh1" }, latency: { op: "nats-latency", node: "rbh1" }, samples: [] } as Path,
      tlsOverNats: stream("rah1", "rbh1", { node: "rbh1", overNats: true } as { node: string }),
      relayed: stream("rah1", "rbh1", { node: "rbh1" }),
    };
    // One run per path first, not counted: the first run of every path in a fresh process was always the slowest (JIT, TCP windows).
    if (!firstByteOnly) for (const path of Object.values(paths)) await checked(lab, path.from, { ...path.throughput, bytes });
    // Interleaved: each path next to its baseline in every round, so a slow moment of the machine hits both.
    for (let round = 0; round < (firstByteOnly ? 0 : rounds); round++) for (const path of Object.values(paths)) await throughputOnce(lab, path, bytes);
    const rawLan = await measure(lab, paths.rawLan);
    const nodeTlsLan = await measure(lab, paths.nodeTlsLan);
    const direct = await measure(lab, paths.direct);
    const rawWan = await measure(lab, paths.rawWan);
    const nodeTlsWan = await measure(lab, paths.nodeTlsWan);
    const punched = await measure(lab, paths.punched);
    const plainNats = await measure(lab, paths.plainNats);
    const tlsOverNats = await measure(lab, paths.tlsOverNats);
    const relayed = await measure(lab, paths.relayed);
    if (profiling && !links) {
      // After the measured runs, so the profiler's cost is in none of them; the ceilings beside their paths, to tell Node's share from leafmesh's.
      const profiled: [string, Path][] = [
        ["direct", paths.direct],
        ["node-tls-lan", paths.nodeTlsLan],
        ["punched", paths.punched],
        ["node-tls-wan", paths.nodeTlsWan],
        ["relayed", paths.relayed],
        ["plain-nats", paths.plainNats],
        ["tls-over-nats", paths.tlsOverNats],
      ];
      for (const [name, path] of profiled) await profileOnce(lab, name, path);
    }

    const row = (name: string, path: string, measured: Measured, baseline: Measured, baselineName: string, ceiling?: Measured) => [
      name,
      path,
      measured.mbps,
      percentile(measured.rtt, 50),
      percentile(measured.rtt, 99),
      measured.firstByte ? percentile(measured.firstByte, 50) : "n/a",
      measured.firstByteSpaced ? percentile(measured.firstByteSpaced, 50) : "n/a",
      measured.cpuMsPerMiB,
      measured === baseline ? "baseline" : `${ratio(measured.mbps, baseline.mbps)} of ${baselineName}`,
      ceiling ? `${ratio(measured.mbps, ceiling.mbps)}; CPU per MiB ${ratio(measured.cpuMsPerMiB, ceiling.cpuMsPerMiB)}` : "",
    ];
    const shape = (link: LinkShape) => (link.rateMbit >= 1_000 ? `${link.rateMbit / 1_000} Gbit/s` : `${link.rateMbit} Mbit/s`);
    return {
      title: links
        ? `tunnel: streams between lab namespaces, links shaped like an edge network (LAN ${shape(links.lan)}; each site's uplink ${shape(links.wan)})`
        : "tunnel: streams between lab namespaces, unshaped links (CPU-bound: throughput, RTT, time to first byte)",
      columns: ["path", "between", "MB/s", "RTT p50 ms", "RTT p99 ms", "first byte p50 ms", "first byte p50 ms, 100 ms apart", "CPU ms per MiB (both ends)", "throughput vs baseline", "vs its Node TLS ceiling"],
      rows: [
        row("raw TCP (LAN)", "lah1 → lah2", rawLan, rawLan, ""),
        row("Node TLS 1.3 + splice, no leafmesh (LAN)", "lah1 → lah2", nodeTlsLan, rawLan, "raw LAN"),
        row("leafmesh direct", "lah1 → lah2 (mDNS)", direct, rawLan, "raw LAN", nodeTlsLan),
        row("raw TCP (across NATs)", "pah1 → pb router (DNAT)", rawWan, rawWan, ""),
        row("Node TLS 1.3 + splice, no leafmesh (across NATs)", "pah1 → pb router (DNAT)", nodeTlsWan, rawWan, "raw across NATs"),
        row("leafmesh hole-punched", "pah1 (NAT3) → pbh1 (NAT1)", punched, rawWan, "raw across NATs", nodeTlsWan),
        row("plain NATS pub/sub", "rah1 → hub → rbh1 (leafs)", plainNats, plainNats, ""),
        row("Node TLS 1.3 over plain NATS, no leafmesh", "rah1 → hub → rbh1 (leafs)", tlsOverNats, plainNats, "plain NATS"),
        row("leafmesh relayed", "rah1 (NAT4) → hub → rbh1 (NAT4)", relayed, plainNats, "plain NATS", tlsOverNats),
      ],
      notes: [
        `${(bytes / 1024 / 1024).toFixed(0)} MiB per throughput run, into a sink that answers with its byte count; median of ${rounds} runs after one uncounted warm-up run, each path interleaved with its baseline; RTT over 200 one-byte echoes on one stream; first byte = new stream + one echoed byte, 30 times back to back (each stream may find what was made ahead of it still being made: handshake-bound), then 20 times 100 ms apart (as an application opens streams now and then).`,
        `CPU = user + system time of the sending and the receiving process (agent and sink, or NATS client) per MiB; the nats-servers between them are not counted (they carry the same bytes for plain NATS and the relay).${links ? " On shaped links a run lasts longer, so the figure also holds each process's idle work (timers, pings, record refreshes) over that time." : ""}`,
        "Goals (issue 6): direct and hole-punched ≥ 0.80× raw TCP on the same path; relayed ≥ 0.70× plain NATS on the same leaf → hub → leaf path.",
        "The lab runs secured (node certificates): leafmesh streams each run under a TLS 1.3 session of their own (services/tunnel/tls-streams.ts): direct over a TCP connection to the peer, hole-punched over a TCP connection punched for the stream ahead of time, relayed over a relay channel of their own. The first stream of a hole-punched pair (no spare punched yet) runs noise + yamux over the pair's punched libp2p connection. Raw TCP and plain NATS are unencrypted.",
        "leafmesh's receiving agent splices each stream to its target (a second local TCP hop); raw TCP goes straight to the sink.",
        "Node TLS 1.3 + splice is the ceiling of the encrypted paths: a TLS 1.3 connection on which both ends present their node certificate and check the other's against the mesh CA, as leafmesh's streams do (mutual since 2026-12-07; before, only the server presented one and nobody checked it), served by Node's own tls module (no tunnel code: no stream header, no path choice) and joined to the same local sink as a stream's target with the agent's own splice (lib/join-streams.ts). It pays what docs/trust.md requires (encryption at both ends) and the second local hop; the last column is leafmesh against it, for throughput and for CPU per MiB.",
        "Plain NATS RTT is request/reply through the same leafs and hub; it has no first-byte figure (no stream to open).",
        "Node TLS 1.3 over plain NATS is the relayed path's ceiling (lab/tls-over-nats.ts): Node's own TLS client and server, both with their node certificate checked against the mesh CA (mutual since 2026-12-07), over two NATS subjects on the same leafs and hub, each TLS write published as it is, each message handed to TLS as it arrives, a flush after every MiB as plain NATS does (no frames, sequence numbers, credit or pings), the server's end joined to the same sink or echo with the agent's splice. Its first byte is a new TLS session over NATS (a request to open it, then the handshake) and one echoed byte; a relayed stream's is leafmesh's whole open (a spare TLS session when one is ready).",
        links
          ? "Shaped with a token bucket (tc tbf) on both ends of each link: the links, not the CPU, bound throughput, as on a real edge network. No delay is added (this kernel has no netem): RTTs are the machine's plus queueing."
          : "Unshaped: veth moves bytes as fast as the CPU copies them, and one machine's 2 cores run every process of every namespace, so throughput is bound by CPU per MiB (column): leafmesh adds TLS at both ends and the receiving agent's splice to its target (a second TCP hop), raw TCP has neither.",
      ],
    };
  } finally {
    await lab.teardown();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const written = writeTables("tunnel", await runTunnelBench());
  console.log(written.markdown);
}
