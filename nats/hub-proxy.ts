/**
 * The HTTP CONNECT protocol towards a site's forward proxy (squid, tinyproxy, a
 * corporate proxy), pure: the proxy URL a user gives (`--hub-proxy`), the
 * CONNECT request, the proxy's reply head read as it arrives, and what a refusal
 * means in the operator's words, naming the proxy and the hub. The sockets are in
 * hub-proxy-forwarder.ts.
 *
 * ```ts
 * const proxy = parseHubProxy("http://leafmesh:secret@proxy.factory.lan:3128", "--hub-proxy");
 * socket.write(connectRequest(proxy, { host: "hub-1.example.net", port: 443 }));
 * const reply = readConnectReply(received);   // "more", { ok: true, rest }, or { ok: false, problem }
 * ```
 */
import { LeafmeshError } from "../lib/errors.ts";
import { formatHostPort, type HostPort } from "./render.ts";

export interface HubProxy {
  host: string;
  port: number;
  /** The Proxy-Authorization header's value (Basic, RFC 7617), from the URL's user and password. */
  authorization?: string;
  user?: string;
  /** The URL as logs and status show it: the password replaced by ***. */
  shown: string;
}

/** @default 16 KiB — a CONNECT reply head is a few hundred bytes; a proxy that sends more before its blank line is broken. */
export const maxReplyHeadBytes = 16 * 1024;

/** http://[USER:PASSWORD@]HOST[:PORT] (port 3128, squid's, when left out), or CONFIG_INVALID (naming `flag`, when given). */
export function parseHubProxy(text: string, flag?: string): HubProxy {
  const where = flag ? `${flag}: ` : "";
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch (cause) {
    throw new LeafmeshError("CONFIG_INVALID", `${where}'${text}' is not a URL (expected http://HOST:PORT, e.g. http://proxy.factory.lan:3128)`, { cause });
  }
  const shown = (() => {
    const copy = new URL(url);
    if (copy.password) copy.password = "***";
    return copy.toString().replace(/\/$/, "");
  })();
  if (url.protocol !== "http:") {
    throw new LeafmeshError(
      "CONFIG_INVALID",
      `${where}'${shown}' must be an http:// proxy URL (the proxy is spoken to in plain HTTP, CONNECT; the hub's TLS goes through it end to end)${url.protocol === "https:" ? ": a proxy taking TLS itself (https://) is not supported" : ""}`,
    );
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash) throw new LeafmeshError("CONFIG_INVALID", `${where}'${shown}' must be http://HOST:PORT, without a path`);
  const user = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  return {
    host: url.hostname.replace(/^\[|\]$/g, ""),
    port: url.port ? Number(url.port) : 3128,
    ...(user || password ? { user, authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` } : {}),
    shown,
  };
}

/** The request that asks the proxy for a tunnel to `target` (RFC 9110 §9.3.6: the authority form, and Host). */
export function connectRequest(proxy: HubProxy, target: HostPort): string {
  const authority = formatHostPort(target);
  return [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`, ...(proxy.authorization ? [`Proxy-Authorization: ${proxy.authorization}`] : []), "User-Agent: leafmesh", "", ""].join("\r\n");
}

export type ConnectProblem =
  | { kind: "refused"; status: number; reason: string }
  | { kind: "not-http"; sample: string }
  | { kind: "head-too-long" };

export type ConnectReply = "more" | { ok: true; rest: Buffer } | { ok: false; problem: ConnectProblem };

/**
 * The proxy's reply so far: "more" until its head (up to the blank line) is whole; then a 2xx opens the tunnel and
 * `rest` is what followed the head (the hub's first bytes), anything else is the proxy's refusal.
 */
export function readConnectReply(received: Buffer): ConnectReply {
  // A proxy that answers with something else than HTTP is told from its first bytes, without waiting for a blank line.
  if (!"HTTP/".startsWith(received.subarray(0, 5).toString("latin1"))) return { ok: false, problem: { kind: "not-http", sample: printable(received) } };
  const end = received.indexOf("\r\n\r\n");
  if (end < 0) return received.length > maxReplyHeadBytes ? { ok: false, problem: { kind: "head-too-long" } } : "more";
  const statusLine = received.subarray(0, received.indexOf("\r\n")).toString("latin1");
  const match = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!match) return { ok: false, problem: { kind: "not-http", sample: printable(received) } };
  const status = Number(match[1]);
  if (status >= 200 && status < 300) return { ok: true, rest: received.subarray(end + 4) };
  return { ok: false, problem: { kind: "refused", status, reason: (match[2] ?? "").trim() } };
}

/** Up to 60 characters of what a peer sent, safe to put in a log line. */
function printable(bytes: Buffer): string {
  return JSON.stringify(bytes.subarray(0, 60).toString("latin1").replace(/[^\x20-\x7e]/g, "."));
}

/** What went wrong between this node, its proxy and a hub, in words that name both and say what to do. */
export function explainProxyProblem(proxy: HubProxy, hub: HostPort, problem: ConnectProblem | { kind: "unreachable"; code: string } | { kind: "closed" } | { kind: "timeout"; ms: number }): string {
  const through = `the proxy ${proxy.shown}`;
  const target = formatHostPort(hub);
  switch (problem.kind) {
    case "refused": {
      const answer = `${problem.status}${problem.reason ? ` ${problem.reason}` : ""}`;
      // tinyproxy answers a wrong password with 401, not 407.
      if (problem.status === 407 || problem.status === 401) {
        return proxy.user !== undefined
          ? `${through} refused the user '${proxy.user}' given in --hub-proxy (${answer}) for CONNECT ${target}: check the user and password in the URL`
          : `${through} asks for a user and password (${answer}) for CONNECT ${target}: give them in --hub-proxy http://USER:PASSWORD@${formatHostPort(proxy)}`;
      }
      if (problem.status === 403) {
        return `${through} refused CONNECT ${target} (${answer}): its rules do not let this node reach that host and port. Many proxies allow CONNECT only to port 443 (squid's SSL_ports, tinyproxy's ConnectPort): have it allow port ${hub.port}, or let the hub take leaf connections on 443 (leafmesh hub --leaf-listen 0.0.0.0:443; docs/restricted-egress.md)`;
      }
      if (problem.status >= 500) return `${through} could not reach the hub ${target} (${answer}): the hub is down, or the proxy cannot resolve or reach it`;
      return `${through} refused CONNECT ${target} (${answer})`;
    }
    case "not-http":
      return `${through} answered CONNECT ${target} with something that is not HTTP (${problem.sample}): is ${formatHostPort(proxy)} an HTTP proxy?`;
    case "head-too-long":
      return `${through} answered CONNECT ${target} with a reply head longer than ${maxReplyHeadBytes} bytes: is ${formatHostPort(proxy)} an HTTP proxy?`;
    case "closed":
      return `${through} closed the connection before answering CONNECT ${target}`;
    case "timeout":
      return `${through} did not answer CONNECT ${target} within ${problem.ms / 1000} s`;
    case "unreachable":
      return problem.code === "ENOTFOUND" || problem.code === "EAI_AGAIN"
        ? `${through}: its name '${proxy.host}' does not resolve (${problem.code}) on this node`
        : `cannot reach ${through} (${problem.code}) to CONNECT ${target}`;
  }
}
