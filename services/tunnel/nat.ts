/**
 * NAT behaviour: the NAT table of docs/nat.md (which pairs can be punched, and how),
 * the observer a hub runs (it tells a node the address its connection came
 * from, and probes that address from elsewhere), and the detection a node runs
 * against it.
 *
 * Detection over TCP, from one fresh local port at a time:
 * - mapping: the same local port seen from two observer ports; different mapped
 *   ports mean a symmetric NAT (a new mapping per destination, `--random-fully`).
 * - filtering: while a connection holds a mapping open, the observer connects to
 *   the mapped address from a second IP (passes: full cone) and from the same IP
 *   but another port (passes: restricted cone). The node listens on that very
 *   local port meanwhile and must echo a nonce the observer sends on each probe
 *   connection (as STUN's CHANGE-REQUEST answer comes from the node itself):
 *   only then was the node reached. A refused connection, an ICMP error or a
 *   timeout is "not reached" — many routers (OpenWrt's REJECT, a plain Linux
 *   stack) answer an unsolicited SYN with an RST of their own, which once made
 *   every NAT behind them look like a full cone.
 *
 * ```ts
 * const observer = await startObserver({ hosts: ["198.18.64.1", "198.18.64.2"], ports: [3478, 3479], log });
 * const nat = await detectNat({ observer: { host: "198.18.64.1", ports: [3478, 3479] } }); // { type: "port-restricted", mapped: {...} }
 * punchPlan("full-cone", "symmetric"); // "a-listens"
 * ```
 */
import { randomBytes } from "node:crypto";
import { connect as netConnect, createServer, isIPv6, type Server, type Socket } from "node:net";
import type { NatType } from "../../bus/node-record.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { deadline } from "../../lib/socket-deadline.ts";
import { localAddresses } from "../../lib/local-addresses.ts";

export interface HostPort {
  host: string;
  port: number;
}

/** How two nodes can open a TCP connection across their NATs, or "relay" when no way exists. */
export type PunchPlan = "simultaneous" | "a-listens" | "b-listens" | "relay";

/**
 * the NAT table of docs/nat.md: a pair where one side is symmetric and the other symmetric
 * or port-restricted cannot be punched. Otherwise:
 * - a side whose NAT admits inbound connections once opened (none, full cone,
 *   restricted cone after one outbound packet to the peer) listens on its
 *   mapped port and the other side dials it: the dialer's mapping (symmetric or
 *   not) does not matter, and no SYN meets a cone's DNAT before the listener is
 *   up (the host would answer it with a RST). The more open side listens.
 * - two port-restricted (or unmeasured) sides open simultaneously from agreed ports.
 * "a-listens" means the first argument listens.
 */
export function punchPlan(a: NatType, b: NatType): PunchPlan {
  const open = (type: NatType) => type === "none" || type === "full-cone";
  if (a === "symmetric" && b === "symmetric") return "relay";
  if (open(a)) return "a-listens";
  if (open(b)) return "b-listens";
  if (a === "restricted-cone") return "a-listens";
  if (b === "restricted-cone") return "b-listens";
  if (a === "symmetric" || b === "symmetric") {
    // The other side is port-restricted (relay) or unmeasured (worth one try: it may be a cone).
    const other = a === "symmetric" ? b : a;
    if (other !== "unknown") return "relay";
    return a === "symmetric" ? "b-listens" : "a-listens";
  }
  return "simultaneous";
}

export function canPunch(a: NatType, b: NatType): boolean {
  return punchPlan(a, b) !== "relay";
}

/** The NAT type from measured behaviour. */
export function classifyNat(measured: { public: boolean; mappingVaries: boolean; reachedFromOtherAddress: boolean; reachedFromOtherPort: boolean }): NatType {
  // The node's own address, seen as it is: nothing translates. Reached from elsewhere it is open ("none"); a stateful
  // firewall in front (an IPv6 LAN's router that drops unsolicited inbound) filters as a NAT of the same filtering
  // does, and is punched as one: counted "none", its peers would dial it and be dropped, and the pair never punched.
  if (measured.public) return measured.reachedFromOtherAddress ? "none" : measured.reachedFromOtherPort ? "restricted-cone" : "port-restricted";
  if (measured.mappingVaries) return "symmetric";
  if (measured.reachedFromOtherAddress) return "full-cone";
  if (measured.reachedFromOtherPort) return "restricted-cone";
  return "port-restricted";
}

// ---------- observer (runs next to a hub) ----------

export interface ObserverOptions {
  /** Two addresses of the observer host: the first is the one nodes connect to, the second probes from "elsewhere". */
  hosts: [string, string];
  /** Two ports on the first host: mapping is compared across them. */
  ports: [number, number];
  log: Logger;
  /** @default 1_500 — a probe SYN that gets no answer in this time was filtered (the kernel retransmits the SYN after 1 s). */
  probeTimeoutMs?: number;
  /** @default 10_000 — a client's line must come whole within this time of its connect. */
  lineTimeoutMs?: number;
}

export interface Observer {
  close(): Promise<void>;
}

/**
 * Whether a probe connection from `from` to `to` reached the node that asked: it must answer the
 * nonce sent on the connection with the same nonce (a router's own RST or ICMP, or a host that
 * happens to listen there, does not).
 */
export function probeNode(to: HostPort, from: { host: string }, timeoutMs: number): Promise<{ reached: boolean; answer: string }> {
  return new Promise((resolve) => {
    const nonce = randomBytes(12).toString("hex");
    const socket = netConnect({ host: to.host, port: to.port, localAddress: from.host, timeout: timeoutMs });
    let buffered = "";
    const done = (reached: boolean, answer: string) => {
      socket.destroy();
      resolve({ reached, answer });
    };
    socket.once("connect", () => socket.write(`${probeGreeting} ${nonce}\n`));
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      if (buffered.includes("\n") || buffered.length > 200) done(buffered.split("\n")[0] === nonce, "answered");
    });
    socket.once("timeout", () => done(false, buffered ? "no nonce" : "timeout"));
    socket.once("error", (error: NodeJS.ErrnoException) => done(false, error.code ?? "error"));
    socket.once("close", () => done(false, "closed"));
  });
}

/** The first line of a probe connection; the node answers with the nonce after it. */
export const probeGreeting = "leafmesh-nat-probe";

/**
 * The node's side of a filtering probe: a listener on the local port whose mapping is measured,
 * answering each probe's nonce. Opened after the connection to the observer (a listening socket
 * would keep the connection from binding that port), closed when the probe is done.
 */
export async function answerProbes(localPort: number, family: 4 | 6 = 4): Promise<{ close(): Promise<void> }> {
  const server = createServer((socket) => {
    deadline(socket, 5_000, () => socket.destroy());
    socket.on("error", () => undefined);
    let buffered = "";
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      if (buffered.length > 200) return socket.destroy();
      const newline = buffered.indexOf("\n");
      if (newline < 0) return;
      const [greeting, nonce] = buffered.slice(0, newline).split(" ");
      if (greeting === probeGreeting && nonce && /^[0-9a-f]{1,64}$/.test(nonce)) socket.end(`${nonce}\n`);
      else socket.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // The family the observer is reached in: an IPv6 node is probed at its IPv6 address.
    server.listen(localPort, family === 6 ? "::" : "0.0.0.0", () => resolve());
  });
  return { close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** Line protocol: the client sends one JSON line, the observer answers one JSON line and closes. */
export async function startObserver(options: ObserverOptions): Promise<Observer> {
  const probeTimeoutMs = options.probeTimeoutMs ?? 1_500;
  const servers: Server[] = [];
  const handle = (socket: Socket) => {
    // From accept, not the last byte: the observer answers strangers, and a trickled line held its socket for hours.
    deadline(socket, options.lineTimeoutMs ?? 10_000, () => socket.destroy());
    socket.on("error", () => undefined);
    let buffered = "";
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      if (buffered.length > 1024) return socket.destroy();
      const newline = buffered.indexOf("\n");
      if (newline < 0) return;
      // One line, one answer: what comes after it is not read as the line again (each byte after a probe
      // request made the hub probe the client twice more, a stranger's amplifier of the hub's connections).
      socket.off("data", onData);
      socket.resume();
      const observed = { host: (socket.remoteAddress ?? "").replace(/^::ffff:/, ""), port: socket.remotePort ?? 0 };
      let request: { op?: string } = {};
      try {
        request = JSON.parse(buffered.slice(0, newline)) as { op?: string };
      } catch {
        socket.end(`${JSON.stringify({ error: "bad request" })}\n`);
        return;
      }
      if (request.op === "probe") {
        void (async () => {
          const [otherAddress, otherPort] = await Promise.all([
            probeNode(observed, { host: options.hosts[1] }, probeTimeoutMs),
            probeNode(observed, { host: options.hosts[0] }, probeTimeoutMs),
          ]);
          // The evidence goes back too: what each probe met (answered, ECONNREFUSED from a router, timeout...).
          socket.end(
            `${JSON.stringify({ observed, reachedFromOtherAddress: otherAddress.reached, reachedFromOtherPort: otherPort.reached, evidence: { otherAddress: otherAddress.answer, otherPort: otherPort.answer } })}\n`,
          );
        })();
        return;
      }
      socket.end(`${JSON.stringify({ observed })}\n`);
    };
    socket.on("data", onData);
  };
  for (const port of options.ports) {
    const server = createServer(handle);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, options.hosts[0], () => resolve());
    });
    servers.push(server);
  }
  options.log.info({ hosts: options.hosts, ports: options.ports }, "NAT observer listening");
  return {
    async close() {
      await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    },
  };
}

// ---------- detection (runs in the node) ----------

export interface ObserverAddress {
  host: string;
  ports: [number, number];
}

/**
 * Asks the observer over a connection from `localPort`; resolves with its JSON answer.
 * `beforeAsking` runs once connected, before the request is sent (a probe's listener opens then).
 */
export function askObserver<T>(observer: HostPort, localPort: number, op: "observe" | "probe", timeoutMs = 6_000, beforeAsking?: () => Promise<void>): Promise<T> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: observer.host, port: observer.port, localPort, timeout: timeoutMs });
    let buffered = "";
    socket.once("connect", () => {
      void (beforeAsking ?? (async () => undefined))().then(
        () => socket.write(`${JSON.stringify({ op })}\n`),
        (error: Error) => socket.destroy(error),
      );
    });
    socket.on("data", (chunk: Buffer) => (buffered += chunk.toString("utf8")));
    socket.once("timeout", () => socket.destroy(new LeafmeshError("TUNNEL_FAILED", `NAT observer ${observer.host}:${observer.port} did not answer within ${timeoutMs} ms`)));
    socket.once("error", reject);
    socket.once("close", () => {
      try {
        resolve(JSON.parse(buffered.trim()) as T);
      } catch (cause) {
        reject(new LeafmeshError("TUNNEL_FAILED", `NAT observer ${observer.host}:${observer.port} gave no answer`, { cause }));
      }
    });
  });
}

/** A free local TCP port (bound and released), for an agreed-port connection. */
export function freeLocalPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

export interface NatDetection {
  type: NatType;
  /** The address the observer saw (the node's public side). */
  mapped: HostPort;
  /** What the type was concluded from: the two mapped addresses, and what each filtering probe met. */
  evidence?: { mapping: [HostPort, HostPort]; filtering?: { otherAddress: string; otherPort: string } };
}

export async function detectNat(options: { observer: ObserverAddress }): Promise<NatDetection> {
  const { host, ports } = options.observer;
  const mappingPort = await freeLocalPort();
  const first = await askObserver<{ observed: HostPort }>({ host, port: ports[0] }, mappingPort, "observe");
  const second = await askObserver<{ observed: HostPort }>({ host, port: ports[1] }, mappingPort, "observe");
  const filteringPort = await freeLocalPort();
  let answering: { close(): Promise<void> } | undefined;
  let probe: { observed: HostPort; reachedFromOtherAddress: boolean; reachedFromOtherPort: boolean; evidence?: { otherAddress: string; otherPort: string } };
  try {
    probe = await askObserver({ host, port: ports[0] }, filteringPort, "probe", 6_000, async () => {
      answering = await answerProbes(filteringPort, isIPv6(host) ? 6 : 4);
    });
  } finally {
    await answering?.close();
  }
  const type = classifyNat({
    public: localAddresses().has(first.observed.host),
    mappingVaries: first.observed.port !== second.observed.port || first.observed.host !== second.observed.host,
    reachedFromOtherAddress: probe.reachedFromOtherAddress,
    reachedFromOtherPort: probe.reachedFromOtherPort,
  });
  return { type, mapped: first.observed, evidence: { mapping: [first.observed, second.observed], filtering: probe.evidence } };
}
