/**
 * The binding of each traffic listener (its service port, cluster IPs and the
 * local address that takes them), as the bus's `traffic.listeners` events and
 * status carry it, made once per listener state and kept with its JSON.
 *
 * Why kept: the listener publisher sends the whole set at each generation, and
 * at 10,000 service ports building and encoding every binding again took ~29 ms
 * a generation. A burst waits ten times that between generations
 * (listener-publisher.ts), so a fresh agent's proxier learnt the last of its
 * listeners ~300 ms after traffic held them (bench/fabric, issue 17). Made
 * again only when what the listener binds (its plan's cluster IPs, port, a UDP
 * port's refusal) or its IPv6 address changes, not at each new plan.
 */
import type { ListenerBinding } from "../../bus/events.ts";
import { ipv6ListenerAddress } from "../../bus/ipv6-listeners.ts";
import type { ServicePortBalancer } from "../../balance/balancer.ts";
import type { ServicePortPlan } from "./plan.ts";
import type { SharedTcpListener } from "./shared-listener.ts";
import { TcpServicePortListener } from "./tcp-proxy.ts";
import { UdpServicePortListener } from "./udp-proxy.ts";

export type Listener = { plan: ServicePortPlan; balancer: ServicePortBalancer<ServicePortPlan>; socket: TcpServicePortListener | UdpServicePortListener };

/**
 * Whether a new plan of a listener binds as its last one did. A Service is planned again when its slices change (a
 * fresh agent plans most twice: the Service, then its slices) with new endpoints and the same cluster IPs and port:
 * its binding stays as it was encoded. A refused UDP port is the one thing endpoints change in it.
 */
function sameBinding(was: ServicePortPlan, now: ServicePortPlan): boolean {
  return was.protocol === now.protocol && was.port === now.port && sameStrings(was.clusterIPs, now.clusterIPs) && (was.protocol !== "UDP" || (was.endpoints.length === 0) === (now.endpoints.length === 0));
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

interface Kept {
  plan: ServicePortPlan;
  /** The port of the IPv6 socket the binding's IPv6 address came from, 0 for none: a socket opened since changes it. */
  v6: number;
  binding: ListenerBinding;
  json: string;
}

export class ListenerBindings {
  readonly #listenHost: string;
  readonly #front: SharedTcpListener | undefined;
  readonly #kept = new WeakMap<Listener, Kept>();

  constructor(listenHost: string, front: SharedTcpListener | undefined) {
    this.#listenHost = listenHost;
    this.#front = front;
  }

  /** The listener's binding and its JSON; undefined for a listener without a cluster IP (nothing to intercept). */
  of(listener: Listener): Kept | undefined {
    const { plan, socket } = listener;
    if (plan.clusterIPs.length === 0) return undefined;
    // Checked at every generation for every listener: the IPv6 address itself is derived only when the binding is
    // made (a string a listener, each time, was most of what a generation of 10,000 cost).
    const v6 = socket instanceof UdpServicePortListener ? socket.port6 : (this.#front?.port6 ?? 0);
    const kept = this.#kept.get(listener);
    if (kept && kept.v6 === v6 && (kept.plan === plan || sameBinding(kept.plan, plan))) {
      kept.plan = plan;
      return kept;
    }
    const { host6, port6 } = this.#ipv6(socket);
    const listenerHost = socket instanceof TcpServicePortListener ? socket.host : this.#listenHost;
    // A UDP datagram has no reset to refuse it with: the kernel answers port unreachable for it (the proxier's REJECT).
    const refused = plan.protocol === "UDP" && plan.endpoints.length === 0;
    const binding: ListenerBinding = {
      key: plan.key,
      protocol: plan.protocol,
      clusterIPs: plan.clusterIPs,
      port: plan.port,
      listenerHost,
      listenerPort: socket.port,
      ...(host6 !== undefined ? { listenerHost6: host6, listenerPort6: port6 } : {}),
      ...(refused ? { refused } : {}),
    };
    const fresh = { plan, v6, binding, json: JSON.stringify(binding) };
    this.#kept.set(listener, fresh);
    return fresh;
  }

  /** Where the listener takes its IPv6 cluster IP (bus/ipv6-listeners.ts), when it has a socket for it. */
  #ipv6(socket: Listener["socket"]): { host6?: string; port6?: number } {
    if (socket instanceof UdpServicePortListener) return socket.port6 ? { host6: ipv6ListenerAddress, port6: socket.port6 } : {};
    const host6 = this.#front?.host6(socket.host);
    return host6 ? { host6, port6: this.#front!.port6 } : {};
  }
}
