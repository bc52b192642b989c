/**
 * Tunnel benchmark (issue 6), between lab namespaces in one run (root):
 * - raw TCP on the LAN and raw TCP across the NATs (the baselines),
 * - leafmesh direct (LAN, mDNS), hole-punched (port-restricted → full cone) and
 *   relayed (symmetric ↔ symmetric, leaf → hub → leaf) streams,
 * - plain NATS publish/subscribe and request/reply on the same leaf → hub → leaf path.
 * For each: throughput (32 MiB to a sink), RTT p50/p99 (200 one-byte echoes on
 * one stream) and time to first byte of a new stream (p50 over 30).
 * Goals (the issue): direct and hole-punched ≥ 80% of raw TCP; relayed ≥ 70% of plain NATS.
 *
 * Run: `node bench/tunnel/run.ts` (or `npm run bench -- tunnel`).
 */
import { startTunnelLab, type TunnelLab } from "../../lab/tunnel-lab.ts";
import { percentile, ratio, writeTables, type BenchTable } from "../table.ts";

const bytes = Number(process.env.LEAFMESH_BENCH_TUNNEL_BYTES ?? 32 * 1024 * 1024);

interface Measured {
  mbps: number;
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

async function bench(lab: TunnelLab, from: string, request: Record<string, unknown>): Promise<Measured> {
  const reply = await lab.call(from, { op: "bench", bytes, ...request }, 180_000);
  if (!reply.ok) throw new Error(`bench from ${from} failed: ${reply.error}`);
  return reply as unknown as Measured;
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
    const rawLan = await bench(lab, "lah1", { host: lanPeer });
    const direct = await bench(lab, "lah1", { node: "lah2" });
    const rawWan = await bench(lab, "pah1", { host: punchRouter });
    const punched = await bench(lab, "pah1", { node: "pbh1" });
    const relayed = await bench(lab, "rah1", { node: "rbh1" });
    await lab.call("rbh1", { op: "nats-serve" });
    const natsReply = await lab.call("rah1", { op: "nats-bench", node: "rbh1", bytes }, 180_000);
    if (!natsReply.ok) throw new Error(`plain NATS bench failed: ${JSON.stringify(natsReply).slice(0, 300)}`);
    const plainNats = natsReply as unknown as Measured;

    const row = (name: string, path: string, measured: Measured, baseline: Measured, baselineName: string) => [
      name,
      path,
      measured.mbps,
      percentile(measured.rtt, 50),
      percentile(measured.rtt, 99),
      measured.firstByte ? percentile(measured.firstByte, 50) : "n/a",
      measured === baseline ? "baseline" : `${ratio(measured.mbps, baseline.mbps)} of ${baselineName}`,
    ];
    return {
      title: "tunnel: streams between lab namespaces (throughput, RTT, time to first byte)",
      columns: ["path", "between", "MB/s", "RTT p50 ms", "RTT p99 ms", "first byte p50 ms", "throughput vs baseline"],
      rows: [
        row("raw TCP (LAN)", "lah1 → lah2", rawLan, rawLan, ""),
        row("leafmesh direct", "lah1 → lah2 (mDNS)", direct, rawLan, "raw LAN"),
        row("raw TCP (across NATs)", "pah1 → pb router (DNAT)", rawWan, rawWan, ""),
        row("leafmesh hole-punched", "pah1 (NAT3) → pbh1 (NAT1)", punched, rawWan, "raw across NATs"),
        row("plain NATS pub/sub", "rah1 → hub → rbh1 (leafs)", plainNats, plainNats, ""),
        row("leafmesh relayed", "rah1 (NAT4) → hub → rbh1 (NAT4)", relayed, plainNats, "plain NATS"),
      ],
      notes: [
        `${(bytes / 1024 / 1024).toFixed(0)} MiB per throughput run, into a sink that answers with its byte count; RTT over 200 one-byte echoes on one stream; first byte = new stream + one echoed byte, 30 times.`,
        "Goals (issue 6): direct and hole-punched ≥ 0.80× raw TCP on the same path; relayed ≥ 0.70× plain NATS on the same leaf → hub → leaf path.",
        "The lab runs secured (node certificates): leafmesh direct and relayed streams each run under a TLS 1.3 session of their own (services/tunnel/tls-streams.ts; relayed: over a relay channel of their own); hole-punched streams run noise (ChaCha20-Poly1305, the mesh key as handshake prologue) + yamux over the punched socket. Raw TCP and plain NATS are unencrypted.",
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
