/**
 * The screens of `leafmesh status --why PEER` and `leafmesh netcheck`: pure
 * text from the replies of `rpc.<node>.tunnel.why` and `rpc.<node>.netcheck`
 * (bus/path-why.ts), so a test can read them without a mesh.
 */
import type { Netcheck, NatView, PathWhy } from "../bus/path-why.ts";
import type { FabricLink, RelayChoiceStatus } from "../bus/status.ts";
import { formatRelayChoice } from "./relay-choice-view.ts";
import { table } from "./status.ts";

function natLine(view: NatView): string {
  const mapped = view.mapped ? ` as ${view.mapped.host}:${view.mapped.port}` : "";
  const source = view.source === "measured" ? `measured${view.at ? ` at ${view.at}` : ""}` : view.source === "record" ? `from its node record${view.at ? ` of ${view.at}` : ""}` : "not measured";
  return `${view.node}: ${view.type}${mapped} (${source})`;
}

/** The evidence of a NAT type, in the observer's terms (services/tunnel/nat.ts). */
function evidenceLines(view: NatView): string[] {
  const evidence = view.evidence;
  if (!evidence) return ["    evidence: none published"];
  const [first, second] = evidence.mapping;
  const same = first.host === second.host && first.port === second.port;
  const lines = [`    mapping: one local port seen as ${first.host}:${first.port} by observer port 1 and ${second.host}:${second.port} by port 2 → ${same ? "endpoint-independent (the same public port)" : "a new public port per destination (symmetric)"}`];
  if (evidence.filtering) {
    const said = (answer: string) =>
      answer === "answered" ? "reached the node (it echoed the nonce)" : answer === "ECONNREFUSED" ? "refused (an RST from a router, not the node)" : answer === "timeout" ? "no answer (dropped)" : answer;
    lines.push(`    filtering: probe from another address: ${said(evidence.filtering.otherAddress)}; from the same address, another port: ${said(evidence.filtering.otherPort)}`);
  }
  return lines;
}

export function formatWhy(why: PathWhy): string {
  const lines = [`${why.node} → ${why.peer}: ${why.path}${why.rttMs !== undefined ? `, RTT ${why.rttMs.toFixed(2)} ms` : ""} (as of ${why.at})`, ""];
  lines.push(`WHY  [${why.reason.code}]`, `  ${why.reason.text}`, "");
  lines.push("NAT", `  ${natLine(why.nat.local)}`, ...evidenceLines(why.nat.local), `  ${natLine(why.nat.peer)}`, ...evidenceLines(why.nat.peer));
  lines.push(`  punch plan for the pair: ${why.punchPlan}${why.punchPlan === "relay" ? " (no punch exists)" : ""}`, "");
  lines.push("CONNECTIONS", why.connections.length === 0 ? "  (none open)" : why.connections.map((connection) => `  ${connection}`).join("\n"), "");
  lines.push("ATTEMPTS (oldest first)");
  lines.push(
    why.attempts.length === 0
      ? "  (none from this node: the peer may be the one that tries; see its own --why)"
      : table(
          ["TIME", "WAY", "PLAN", "OUTCOME", "MS", "DETAIL"],
          why.attempts.map((attempt) => [attempt.at.slice(11, 23), attempt.way, attempt.plan ?? "-", attempt.repeats ? `${attempt.outcome} ×${attempt.repeats}` : attempt.outcome, String(Math.round(attempt.ms)), attempt.detail]),
        )
          .split("\n")
          .map((line) => `  ${line}`)
          .join("\n"),
  );
  lines.push("", "WOULD CHANGE IT", ...why.wouldChange.map((text) => `  - ${text}`));
  return `${lines.join("\n")}\n`;
}

/** `links`: the node's fabric links from its status; undefined when no leafmesh process answered status. */
export function formatNetcheck(check: Netcheck, links: FabricLink[] | undefined, relayChoice?: RelayChoiceStatus): string {
  const lines = [`netcheck ${check.node} (as of ${check.at})`, ""];
  lines.push("NAT", `  ${natLine(check.nat)}${check.nat.error ? ` — ${check.nat.error}` : ""}`);
  if (check.observer) lines.push(`  observer: ${check.observer.host} ports ${check.observer.ports.join(", ")}`);
  if (check.nat.evidence) lines.push(...evidenceLines(check.nat));
  lines.push("", "UPSTREAMS (TCP connect time, best of 3)");
  const attached = new Set((links ?? []).filter((link) => link.direction === "upstream" && link.up).map((link) => link.url ?? ""));
  lines.push(
    check.upstreams.length === 0
      ? "  (none configured)"
      : table(
          ["URL", "RTT", "LEAF"],
          check.upstreams.map((upstream) => [upstream.url, upstream.rttMs !== undefined ? `${upstream.rttMs.toFixed(2)}ms` : "no answer", [...attached].some((url) => url && sameEndpoint(url, upstream.url)) ? "attached" : ""]),
        )
          .split("\n")
          .map((line) => `  ${line}`)
          .join("\n"),
  );
  const leaf = links?.find((link) => link.direction === "upstream");
  lines.push(`  leaf link: ${!links ? "unknown (no status answer)" : leaf ? `${leaf.up ? "up" : "down"} to ${leaf.remote}${leaf.url ? ` (${leaf.url})` : ""}${leaf.rttMs !== undefined ? `, RTT ${leaf.rttMs} ms` : ""}` : "none"}`);
  if (relayChoice) lines.push("", ...formatRelayChoice(relayChoice));
  lines.push("", `LAN (mDNS ${check.mdns ? "on" : "off"})`);
  lines.push(
    check.lan.length === 0
      ? check.mdns
        ? "  no LAN peer seen by mDNS"
        : "  mDNS is off on this node"
      : table(
          ["NODE", "PEER ID", "ADDRESSES", "LAST SEEN", "DIRECT"],
          check.lan.map((peer) => [peer.node ?? "?", `${peer.peerId.slice(0, 16)}…`, peer.addresses.join(" "), peer.lastSeen.slice(11, 19), peer.connected ? "connected" : "no"]),
        )
          .split("\n")
          .map((line) => `  ${line}`)
          .join("\n"),
  );
  return `${lines.join("\n")}\n`;
}

/** Whether two upstream URLs name the same host and port (the link's URL may have another scheme). */
function sameEndpoint(a: string, b: string): boolean {
  try {
    const left = new URL(a);
    const right = new URL(b);
    return left.hostname === right.hostname && left.port === right.port;
  } catch {
    return false;
  }
}
