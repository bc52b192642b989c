/**
 * The node's cluster-IP path, offered to the SOCKS proxy (bus/streams.ts `ServicePortDialer`):
 * a Service port is opened with the plan and balancer of its cluster-IP listener, the same
 * admission by partition policy and the same connect attempts (endpoint-connect.ts), so that a
 * client through SOCKS is sent where a client of the cluster IP is sent, or refused where it is
 * refused, with the reason in words. Before, SOCKS chose endpoints itself (ready ones, this node's
 * first): across the WAN while its own site ran the Service, to an endpoint the cluster IP had
 * ejected, to a fail-closed Service while the node was cut off.
 *
 * ```ts
 * const dialer = servicePortDialer({ reader: () => feed.reader, node: "edge-a", listeners, rejected, connect });
 * await dialer.openServicePort({ namespace: "shop", service: "web", port: 80, clientIp: "127.0.0.1" }, { signal });
 * // { kind: "refused", reason: "Service shop/web: fail-closed while the node cannot reach its upstream" }
 * ```
 */
import type { CatalogReader } from "../../bus/catalog.ts";
import type { ServicePortConnection, ServicePortDialer } from "../../bus/streams.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import type { Listener } from "./bindings.ts";
import { connectToEndpoint, releaseEndpoint, type EndpointConnectOptions } from "./endpoint-connect.ts";
import { servicePortKey, type RejectedService } from "./plan.ts";

export interface ServicePortDialerOptions {
  reader: () => CatalogReader;
  /** This node (named in a refusal under internalTrafficPolicy Local). */
  node: string;
  /** The actor's listeners by plan key: their plans and balancers are the ones used. */
  listeners: ReadonlyMap<string, Listener>;
  /** Services left out of the plans, and why. */
  rejected: () => readonly RejectedService[];
  connect: EndpointConnectOptions;
}

export function servicePortDialer(options: ServicePortDialerOptions): ServicePortDialer {
  const { counters, shared } = options.connect;
  const refused = (reason: string, counted: string): ServicePortConnection => {
    counters.count(`socks refused: ${counted}`);
    return { kind: "refused", reason };
  };
  return {
    async openServicePort(request, { signal } = {}) {
      const label = `${request.namespace}/${request.service}`;
      const service = options.reader().service(request.namespace, request.service);
      if (!service) return refused(`no Service ${label}`, "no service");
      const port = service.ports.find((candidate) => candidate.port === request.port && candidate.protocol === "TCP");
      if (!port) return refused(`Service ${label} has no TCP port ${request.port}`, "no such port");
      const listener = options.listeners.get(servicePortKey(request.namespace, request.service, port.name, "TCP"));
      if (!listener) {
        // Its cluster IP is not served either: an invalid annotation, a listener that could not open, or not planned yet.
        const rejection = options.rejected().find((candidate) => candidate.service === label);
        return refused(`Service ${label} is not proxied on this node: ${rejection ? rejection.error : `port ${port.name || request.port} has no listener (yet)`}`, "not proxied");
      }
      const { balancer } = listener;
      if (!balancer.hasEndpoints) {
        const local = service.internalTrafficPolicy === "Local" ? ` on this node (${options.node}), and its internalTrafficPolicy is Local` : "";
        return refused(`Service ${label} has no ready endpoint${local}`, "no endpoints");
      }
      const refusal = shared.admit?.(balancer.plan);
      if (refusal) return refused(`Service ${label}: ${refusal}`, refusal);
      const outcome = await connectToEndpoint(options.connect, balancer, request.clientIp, signal ?? new AbortController().signal, "socks");
      if (outcome.kind === "client left") throw new LeafmeshError("PROXY_FAILED", `the SOCKS client left before its connection to ${label} was made`);
      if (outcome.kind === "unreachable") return refused(`no endpoint of Service ${label} could be reached (tried ${outcome.tried.join(", ") || "none"})`, "no endpoint reachable");
      // A SOCKS client sends nothing before its reply, so no early bytes go with the header (none given above).
      if (outcome.kind === "early bytes in doubt") throw new LeafmeshError("PROXY_FAILED", `the connection to ${label} failed after the client's first bytes went`);
      counters.count("socks connections");
      const { target } = outcome;
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        releaseEndpoint(shared, target);
      };
      return { kind: "connected", stream: outcome.upstream, endpoint: target.key, node: target.nodeName, release };
    },
  };
}
