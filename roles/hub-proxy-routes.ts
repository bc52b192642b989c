/**
 * `--hub-proxy` on an agent or a site server: the upstreams reached through the
 * site's HTTP proxy (nats/hub-proxy-forwarder.ts), and what the leaf remote
 * lists for that.
 *
 * nats-server 2.9.10 has no `server_name` in a remote's `tls {}` (opts.go parseTLS
 * refuses unknown fields), and verifies a hub dialled at an address against the
 * first host name among the remote's URLs (leafnode.go saveTLSHostname, client.go
 * doTLSHandshake: "If it is an IP, use the cfg's tlsName"). So the remote lists
 * the loopback forwarders first and the hubs' own URLs after them: the leaf
 * verifies every hub it reaches through the proxy against the first hub's name,
 * which the hubs' one certificate names (leafmesh keys init --hub-hosts), and
 * tries the hubs directly when the proxy fails.
 *
 * ```ts
 * checkProxiedUpstreams(["tls://hub-1.example.net:443"], true, "--hub");
 * const listed = leafRemoteUrls(order, routes); // [...loopback URLs, ...hub URLs]
 * ```
 */
import { isIP } from "node:net";
import { LeafmeshError } from "../lib/errors.ts";

/** Through a proxy, a TLS leaf can verify a hub only against a host name: an upstream given by address is refused. */
export function checkProxiedUpstreams(upstreams: string[], secured: boolean, option: string): void {
  if (!secured) return;
  for (const upstream of upstreams) {
    const host = new URL(upstream).hostname.replace(/^\[|\]$/g, "");
    if (isIP(host) !== 0) {
      throw new LeafmeshError(
        "CONFIG_INVALID",
        `${option} ${upstream} names its hub by address: through --hub-proxy the leaf verifies the hub's certificate against a host name only (nats-server 2.9.10 checks a loopback-forwarded hub against the first name among its URLs). Give the name the hubs' certificate lists (leafmesh keys hub-cert --hub-hosts)`,
      );
    }
  }
}

/** The leaf remote's URLs: the forwarders in `order`, then each one's hub URL (the TLS name, and a direct way when the proxy fails). */
export function leafRemoteUrls(order: string[], routes: readonly { hub: string; via: string }[]): string[] {
  const hubOf = (via: string) => routes.find((route) => route.via === via)?.hub ?? via;
  return [...order, ...order.map(hubOf)];
}

/**
 * A node not connected, with a proxy in its environment and no --hub-proxy: what a user tries first (HTTPS_PROXY,
 * as for curl and apt) does nothing for the leaf link, which nats-server dials itself. Said, not followed: a node
 * whose hubs are reachable directly would otherwise move its leaf link to a proxy that may refuse CONNECT to 7422.
 */
export function proxyEnvironmentHint(env: NodeJS.ProcessEnv): string | undefined {
  for (const name of ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"]) {
    const value = env[name];
    if (!value) continue;
    let shown = value;
    try {
      const url = new URL(value);
      if (url.password) url.password = "***";
      shown = url.toString().replace(/\/$/, "");
    } catch {
      // shown as given
    }
    return `${name}=${shown} is set, but the leaf link to the hubs does not use it (nats-server dials them itself): if this node reaches its hubs only through that proxy, give --hub-proxy ${shown} (docs/restricted-egress.md)`;
  }
  return undefined;
}
