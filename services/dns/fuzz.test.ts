/**
 * Bad input never stops the server: 20,000 random and mutated packets over UDP
 * (garbage, truncations, bit flips, compression loops, thousands of questions,
 * absurd counts) and hundreds of broken TCP streams, with a valid query answered
 * after every batch; then 100,000 more straight into `respond()`, where every
 * reply it gives must decode and carry the query's id.
 */
import dnsPacket from "dns-packet";
import { createConnection } from "node:net";
import { createSocket } from "node:dgram";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { DnsServer } from "./server.ts";
import { DnsStats } from "./stats.ts";
import { frame, udpQuery } from "../../test/support/dns-servers.ts";
import { feedOf, sampleCatalog } from "../../test/support/dns-catalog.ts";

function prng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const seeds = [
  dnsPacket.encode({ type: "query", id: 1, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name: "web.shop.svc.cluster.local", type: "A" }] }),
  dnsPacket.encode({ type: "query", id: 2, questions: [{ name: "_pg._tcp.db.shop.svc.cluster.local", type: "SRV" }], additionals: [{ type: "OPT", name: ".", udpPayloadSize: 4096 } as dnsPacket.Answer] }),
  dnsPacket.encode({ type: "query", id: 3, questions: [{ name: "10.0.96.10.in-addr.arpa", type: "PTR" }] }),
  dnsPacket.encode({ type: "query", id: 4, questions: [{ name: "big.shop.svc.cluster.local", type: "ANY" as "A" }] }),
];

/** A question whose name points at itself: a compression loop. */
function compressionLoop(id: number): Buffer {
  const header = Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
  return Buffer.concat([header, Buffer.from([3, 0x77, 0x65, 0x62, 0, 0, 1, 0, 1]), Buffer.from([0xc0, 29, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0])]);
}

/** A question name that is only a pointer to itself. */
function selfPointer(id: number): Buffer {
  return Buffer.concat([Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
}

/** Packets of 2 to 60 real questions, built once. */
const manyQuestionPackets = Array.from({ length: 20 }, (_, variant) =>
  dnsPacket.encode({ type: "query", id: 5, questions: Array.from({ length: 2 + variant * 3 }, (_, index) => ({ name: `q${index}.shop.svc.cluster.local`, type: "A" as const })) }),
);

function manyQuestions(random: () => number): Buffer {
  const packet = Buffer.from(manyQuestionPackets[Math.floor(random() * manyQuestionPackets.length)]);
  // the count says as many or many more than there are
  if (random() < 0.5) packet.writeUInt16BE(2 + Math.floor(random() * 65_000), 4);
  return packet;
}

function mutate(random: () => number): Buffer {
  const kind = Math.floor(random() * 9);
  const base = Buffer.from(seeds[Math.floor(random() * seeds.length)]);
  switch (kind) {
    case 0: // garbage
      return Buffer.from(Array.from({ length: Math.floor(random() * 600) }, () => Math.floor(random() * 256)));
    case 1: // truncated
      return base.subarray(0, Math.floor(random() * base.length));
    case 2: {
      // bit flips
      for (let flips = 1 + Math.floor(random() * 8); flips > 0; flips--) base[Math.floor(random() * base.length)] ^= 1 << Math.floor(random() * 8);
      return base;
    }
    case 3: // absurd counts
      base.writeUInt16BE(Math.floor(random() * 65536), 4 + 2 * Math.floor(random() * 4));
      return base;
    case 4:
      return compressionLoop(Math.floor(random() * 65536));
    case 5:
      return selfPointer(Math.floor(random() * 65536));
    case 6:
      return manyQuestions(random);
    case 7: {
      // random bytes spliced in
      const at = Math.floor(random() * base.length);
      const junk = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 40) }, () => Math.floor(random() * 256)));
      return Buffer.concat([base.subarray(0, at), junk, base.subarray(at)]);
    }
    default: {
      // header only with random flags
      const header = base.subarray(0, 12);
      header.writeUInt16BE(Math.floor(random() * 65536), 2);
      return header;
    }
  }
}

describe("DNS server under bad input", () => {
  const stats = new DnsStats();
  const server = new DnsServer({ catalog: feedOf(sampleCatalog()).reader, log: silentLogger(), stats, tcpIdleMs: 300 });
  let port: number;

  beforeAll(async () => {
    port = (await server.start({ host: "127.0.0.1", port: 0 })).port;
  });
  afterAll(async () => {
    await server.stop();
  });

  it("keeps answering through 20,000 random and mutated UDP packets", async () => {
    const random = prng(20_000);
    const socket = createSocket("udp4");
    let replies = 0;
    socket.on("message", () => replies++);
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
    try {
      // Batches of 100 keep within the socket's receive buffer; the valid query queued behind each batch paces the next.
      for (let batch = 0; batch < 200; batch++) {
        for (let index = 0; index < 100; index++) socket.send(mutate(random), port, "127.0.0.1");
        // the server is alive and answering after every batch
        const answer = await eventually(() => udpQuery(port, "web.shop.svc.cluster.local", "A", { timeoutMs: 1000 }), 10_000, `answer after batch ${batch}`);
        expect(answer.answers?.[0]?.data).toBe("10.96.0.10");
      }
    } finally {
      socket.close();
    }
    expect(stats.queries).toBeGreaterThan(15_000);
    expect(replies).toBeGreaterThan(1_000);
    // drops are counted by reason
    expect(stats.drops.get("malformed question") ?? 0).toBeGreaterThan(0);
    expect(stats.drops.get("question count") ?? 0).toBeGreaterThan(0);
    expect(stats.drops.get("short packet") ?? 0).toBeGreaterThan(0);
    expect(stats.drops.get("internal error") ?? 0).toBe(0);
  });

  it("keeps answering through 300 broken TCP streams", async () => {
    const random = prng(300);
    const streams = Array.from({ length: 300 }, () => {
      const parts: Buffer[] = [];
      for (let count = 1 + Math.floor(random() * 5); count > 0; count--) {
        const packet = mutate(random);
        const kind = random();
        if (kind < 0.6) parts.push(frame(packet.subarray(0, 65_535)));
        else if (kind < 0.8) parts.push(packet); // no length prefix
        else parts.push(Buffer.from([0xff, 0xff]), packet); // a length promising more than comes
      }
      return Buffer.concat(parts);
    });
    for (let start = 0; start < streams.length; start += 50) {
      await Promise.all(
        streams.slice(start, start + 50).map(
          (bytes) =>
            new Promise<void>((resolve) => {
              const socket = createConnection({ host: "127.0.0.1", port }, () => socket.end(bytes));
              socket.on("data", () => undefined);
              socket.on("error", () => resolve());
              socket.on("close", () => resolve());
            }),
        ),
      );
    }
    const answer = await udpQuery(port, "db.shop.svc.cluster.local", "A");
    expect(answer.answers?.length).toBe(2);
    expect(stats.drops.get("internal error") ?? 0).toBe(0);
  });

  it("gives only well-formed replies with the query's id to 100,000 more packets", async () => {
    const random = prng(100_000);
    let answered = 0;
    for (let index = 0; index < 100_000; index++) {
      const packet = mutate(random);
      const reply = await server.respond(packet, random() < 0.5 ? "udp" : "tcp");
      if (reply === undefined) continue;
      // a UDP cluster answer comes in two parts (the query rewritten, the records), sent as one datagram
      const bytes = Buffer.isBuffer(reply) ? reply : Buffer.concat(reply as Buffer[]);
      expect(bytes.readUInt16BE(0)).toBe(packet.readUInt16BE(0));
      expect(bytes[2] & 0x80).toBe(0x80);
      const decoded = dnsPacket.decode(bytes);
      expect(decoded.type).toBe("response");
      answered++;
    }
    expect(answered).toBeGreaterThan(10_000);
  });
});
