/**
 * Resolvers in front of the agent's DNS, as users run them on their nodes: dnsmasq
 * (`server=/cluster.local/…`) and unbound (stub-zone, forward-zone) on loopback
 * ports, configured with the blocks of docs/dns.md word for word (only the agent's
 * address is changed to the test's loopback port), plus the defaults of the
 * systems they come from (OpenWrt's dnsmasq options, Debian's unbound validator).
 *
 * ```ts
 * const front = await startDnsmasqFront({ port: await freePort(), leafmesh: { host: "127.0.0.1", port }, block: docBlock("# /etc/dnsmasq.d/leafmesh.conf") });
 * await digShort(front.port, "web.shop.svc.cluster.local", "A");
 * ```
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { requireTool, supervise, unboundServerLines, waitForAnswer, type RunningDnsServer } from "./dns-servers.ts";

const docPath = new URL("../../docs/dns.md", import.meta.url);
/** The agent's address in docs/dns.md's blocks (the agent's usual --dns). */
const documentedAddress = "169.254.96.16";

/** The fenced block of docs/dns.md whose first line is `firstLine`. */
export function docBlock(firstLine: string): string {
  const text = readFileSync(docPath, "utf8");
  for (const match of text.matchAll(/```[a-z]*\n([\s\S]*?)```/g)) if (match[1].startsWith(`${firstLine}\n`)) return match[1];
  throw new Error(`docs/dns.md has no block that starts with '${firstLine}'`);
}

/** A documented block with the agent's address replaced by `host` and the port in the resolver's syntax. */
function pointAt(block: string, leafmesh: { host: string; port: number }, portSeparator: "#" | "@"): string {
  if (!block.includes(documentedAddress)) throw new Error(`the block names no ${documentedAddress}:\n${block}`);
  return block.replaceAll(documentedAddress, leafmesh.port === 53 ? leafmesh.host : `${leafmesh.host}${portSeparator}${leafmesh.port}`);
}

export interface FrontOptions {
  port: number;
  leafmesh: { host: string; port: number };
  /** A block of docs/dns.md (docBlock). */
  block: string;
  /** Lines added to the resolver's own part of the configuration (the system's defaults, a hardening option). */
  extra?: string[];
}

/** The root zone's trust anchor (KSK-2017), as Debian's unbound has it from dns-root-data. */
const rootTrustAnchor = ". DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D";

/**
 * unbound with the validator on and the root's trust anchor (Debian's default), 0x20 and
 * rebinding protection for 10/8, then the documented block. It can reach nothing but the agent:
 * a question that would need the root fails, which is what a test of the cluster zone wants.
 */
export async function startUnboundFront(options: FrontOptions): Promise<RunningDnsServer> {
  const binary = requireTool("unbound");
  const dir = mkdtempSync(join(tmpdir(), "leafmesh-unbound-front-"));
  const lines = [
    ...unboundServerLines({ port: options.port, dir }),
    '  logfile: ""',
    "  verbosity: 1",
    "  num-threads: 1",
    "  access-control: 127.0.0.0/8 allow",
    // The agent is on loopback here; on a node it is on 169.254.96.16.
    "  do-not-query-localhost: no",
    '  module-config: "validator iterator"',
    `  trust-anchor: "${rootTrustAnchor}"`,
    "  use-caps-for-id: yes",
    "  harden-dnssec-stripped: yes",
    "  private-address: 10.0.0.0/8",
    ...(options.extra ?? []).map((line) => `  ${line}`),
    "remote-control:",
    "  control-enable: no",
    pointAt(options.block, options.leafmesh, "@"),
  ];
  const config = join(dir, "unbound.conf");
  writeFileSync(config, `${lines.join("\n")}\n`);
  const server = supervise(binary, ["-d", "-c", config], options.port, dir);
  await waitForAnswer(server, "dns-version.cluster.local", "unbound");
  return server;
}

/** OpenWrt's dnsmasq options (/etc/config/dhcp's defaults), no other upstream unless `extra` names one, then the documented block. */
export async function startDnsmasqFront(options: FrontOptions): Promise<RunningDnsServer> {
  const binary = requireTool("dnsmasq");
  const dir = mkdtempSync(join(tmpdir(), "leafmesh-dnsmasq-front-"));
  const lines = [
    "domain-needed",
    "bogus-priv",
    "stop-dns-rebind",
    "rebind-localhost-ok",
    "local=/lan/",
    "domain=lan",
    "edns-packet-max=1232",
    "no-resolv",
    "no-hosts",
    "no-poll",
    ...(options.extra ?? []),
    pointAt(options.block, options.leafmesh, "#"),
  ];
  const config = join(dir, "dnsmasq.conf");
  writeFileSync(config, `${lines.join("\n")}\n`);
  const server = supervise(binary, ["-k", "-C", config, "-u", "root", "--pid-file=", `--port=${options.port}`, "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=-"], options.port, dir);
  await waitForAnswer(server, "dns-version.cluster.local", "dnsmasq");
  return server;
}
