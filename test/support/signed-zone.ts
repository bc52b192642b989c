/**
 * A small DNSSEC-signed zone served by real unbound, and a validating unbound in front of the agent,
 * for tests of what the agent forwards with and without DO. The zone is signed here with Ed25519
 * (RFC 8080; Debian's unbound has no signer and this machine no ldns-signzone): a KSK/ZSK in one
 * key, RRSIGs over the DNSKEY and the A RRsets (RFC 4034 §3.1.8.1, §6), valid for a day. unbound
 * serves an auth-zone's RRSIGs only to a query with DO, as authoritative servers do.
 *
 * ```ts
 * const zone = signedZone("signed.example", [{ name: "www.signed.example", address: "192.0.2.80" }]);
 * const auth = await startSignedZoneServer({ port: await freePort(), zone });
 * const front = await startValidatingFront({ port: await freePort(), zone, forwardTo: { host: "127.0.0.1", port: agentPort } });
 * ```
 */
import { generateKeyPairSync, sign } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { requireTool, supervise, unboundServerLines, waitForAnswer, type RunningDnsServer } from "./dns-servers.ts";

export interface SignedZone {
  name: string;
  /** The zone file (presentation format), signatures included. */
  text: string;
  /** The zone's DNSKEY as an unbound `trust-anchor:` value. */
  trustAnchor: string;
  /** A name of the zone that has an address, to wait for. */
  probe: string;
}

const ed25519 = 15;
const ttl = 300;

function wireName(name: string): Buffer {
  const labels = name.toLowerCase().split(".").filter(Boolean);
  return Buffer.concat([...labels.map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label, "ascii")])), Buffer.from([0])]);
}

function u16(value: number): Buffer {
  const out = Buffer.alloc(2);
  out.writeUInt16BE(value);
  return out;
}

function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value >>> 0);
  return out;
}

/** RFC 4034 Appendix B. */
function keyTag(rdata: Buffer): number {
  let sum = 0;
  for (let i = 0; i < rdata.length; i++) sum += i & 1 ? rdata[i] : rdata[i] << 8;
  sum += (sum >> 16) & 0xffff;
  return sum & 0xffff;
}

/** YYYYMMDDHHmmSS (RFC 4034 §3.2). */
function signatureTime(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(/[-:T]/g, "").slice(0, 14);
}

/** The zone with an SOA, an NS, one A per record and the key, the DNSKEY and A RRsets signed. */
export function signedZone(zone: string, records: { name: string; address: string }[]): SignedZone {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const rawKey = Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url");
  const dnskeyRdata = Buffer.concat([u16(257), Buffer.from([3, ed25519]), rawKey]);
  const tag = keyTag(dnskeyRdata);
  const now = Math.floor(Date.now() / 1000);
  const inception = now - 3_600;
  const expiration = now + 86_400;
  /** RRSIG over one RRset (RFC 4034 §3.1.8.1): its RDATA without the signature, then each RR in canonical form and order. */
  const rrsig = (owner: string, type: number, typeName: string, rdatas: Buffer[]): string => {
    const labels = owner.split(".").filter(Boolean).length;
    const head = Buffer.concat([u16(type), Buffer.from([ed25519, labels]), u32(ttl), u32(expiration), u32(inception), u16(tag), wireName(zone)]);
    const rrs = [...rdatas].sort(Buffer.compare).map((rdata) => Buffer.concat([wireName(owner), u16(type), u16(1), u32(ttl), u16(rdata.length), rdata]));
    const signature = sign(null, Buffer.concat([head, ...rrs]), privateKey).toString("base64");
    return `${owner}. ${ttl} IN RRSIG ${typeName} ${ed25519} ${labels} ${ttl} ${signatureTime(expiration)} ${signatureTime(inception)} ${tag} ${zone}. ${signature}`;
  };
  const dnskey = `257 3 ${ed25519} ${rawKey.toString("base64")}`;
  const lines = [
    `${zone}. ${ttl} IN SOA ns.${zone}. hostmaster.${zone}. 1 3600 600 86400 60`,
    `${zone}. ${ttl} IN NS ns.${zone}.`,
    `ns.${zone}. ${ttl} IN A 192.0.2.53`,
    `${zone}. ${ttl} IN DNSKEY ${dnskey}`,
    rrsig(zone, 48, "DNSKEY", [dnskeyRdata]),
  ];
  for (const record of records) {
    lines.push(`${record.name}. ${ttl} IN A ${record.address}`);
    lines.push(rrsig(record.name, 1, "A", [Buffer.from(record.address.split(".").map(Number))]));
  }
  return { name: zone, text: `${lines.join("\n")}\n`, trustAnchor: `${zone}. DNSKEY ${dnskey}`, probe: records[0]?.name ?? `ns.${zone}` };
}

/**
 * Waits for unbound's "start of service" (logged once its ports are open; 10 s at most). An answer
 * alone is no proof: when the port was taken by another process, that process answered the probe
 * while unbound was still on its way to "could not open ports".
 */
async function serving(server: RunningDnsServer, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!server.output().includes("start of service")) {
    if (server.child.exitCode !== null || server.child.signalCode !== null || Date.now() > deadline) {
      await server.kill();
      throw new Error(`${what} did not start on 127.0.0.1:${server.port}: ${server.output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * unbound on a loopback port with `server` lines after the common ones and `sections` after them
 * (in its own directory, logging to stderr), up once it says so and answers `probe`.
 */
async function startUnboundWith(what: string, port: number, probe: string, config: (dir: string) => { server: string[]; sections: string[] }): Promise<RunningDnsServer> {
  const binary = requireTool("unbound");
  const dir = mkdtempSync(join(tmpdir(), "leafmesh-unbound-dnssec-"));
  const parts = config(dir);
  const lines = [...unboundServerLines({ port, dir }), "  verbosity: 1", '  logfile: ""', "  num-threads: 1", "  access-control: 127.0.0.0/8 allow", ...parts.server, "remote-control:", "  control-enable: no", ...parts.sections];
  const file = join(dir, "unbound.conf");
  writeFileSync(file, `${lines.join("\n")}\n`);
  const server = supervise(binary, ["-d", "-c", file], port, dir);
  await serving(server, what);
  await waitForAnswer(server, probe, what);
  return server;
}

/** unbound serving the zone authoritatively (auth-zone, no recursion, no validation). */
export function startSignedZoneServer(options: { port: number; zone: SignedZone }): Promise<RunningDnsServer> {
  return startUnboundWith("unbound (signed zone)", options.port, options.zone.probe, (dir) => {
    const zoneFile = join(dir, "zone");
    writeFileSync(zoneFile, options.zone.text);
    return {
      server: ['  module-config: "iterator"'],
      sections: ["auth-zone:", `  name: "${options.zone.name}."`, `  zonefile: "${zoneFile}"`, "  for-downstream: yes", "  for-upstream: no"],
    };
  });
}

/**
 * unbound validating with the zone's key as its trust anchor, forwarding the zone to `forwardTo`
 * (the agent), as a node's resolver with DNSSEC on in front of the agent: an answer of the zone
 * without its RRSIGs is bogus (SERVFAIL), one with them secure (AD). Up once it answers a question
 * outside the zone, whatever the zone's answers.
 */
export function startValidatingFront(options: { port: number; zone: SignedZone; forwardTo: { host: string; port: number } }): Promise<RunningDnsServer> {
  return startUnboundWith("unbound (validating front)", options.port, "up.invalid", () => ({
    server: ["  do-not-query-localhost: no", '  module-config: "validator iterator"', `  trust-anchor: "${options.zone.trustAnchor}"`, "  val-log-level: 2"],
    sections: ["forward-zone:", `  name: "${options.zone.name}."`, `  forward-addr: ${options.forwardTo.host}@${options.forwardTo.port}`],
  }));
}
