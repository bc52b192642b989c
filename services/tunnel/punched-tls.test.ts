/**
 * Hole-punched streams under TLS, in a secured NAT lab (root, network namespaces,
 * iptables, nats-server): on a hole-punched path each stream after the first goes
 * over a TCP connection punched for it ahead of time, under TLS like a direct
 * stream, instead of over the pair's libp2p connection (noise and yamux in
 * JavaScript). The three punch plans: simultaneous open (port-restricted on both
 * sides), the answering side listening (port-restricted → full cone) and the asking
 * side listening (full cone → port-restricted).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../../test/support/ports.ts";
import { startTunnelLab, type TunnelLab } from "../../lab/tunnel-lab.ts";

describe("hole-punched streams under TLS", () => {
  let lab: TunnelLab;

  beforeAll(async () => {
    lab = await startTunnelLab({
      prefix: "lmtp-",
      secured: true,
      sites: [
        { name: "p1", nat: "port-restricted" },
        { name: "p2", nat: "port-restricted" },
        { name: "f1", nat: "full-cone" },
      ],
    });
  }, 90_000);

  afterAll(async () => {
    await lab?.teardown();
  }, 30_000);

  const tls = async (agent: string) => (await lab.call(agent, { op: "status" })).tlsStreams as { opened: number; served: number; spares: string[] };

  async function roundTrip(a: string, b: string) {
    const reply = await lab.call(a, { op: "roundtrip", node: b, bytes: 262_144 });
    expect(reply, `${a} → ${b}: ${reply.error ?? ""}`).toMatchObject({ ok: true, length: 262_144, kind: "hole-punched" });
  }

  it("carries the streams after the first over connections punched for them, under TLS, for every punch plan", async () => {
    for (const [a, b] of [
      ["p1h1", "p2h1"],
      ["p1h1", "f1h1"],
      ["f1h1", "p1h1"],
    ]) {
      await eventually(async () => (await lab.call(a, { op: "roundtrip", node: b, bytes: 1024 })).kind === "hole-punched", 60_000, `${a} → ${b} hole-punched`);
      const [opened, served] = [(await tls(a)).opened, (await tls(b)).served];
      // Each stream takes the spare punched for it, if there is one, and has the next one punched.
      await eventually(
        async () => {
          await roundTrip(a, b);
          return (await tls(a)).opened > opened;
        },
        20_000,
        `${a} → ${b}: a stream over a punched TLS connection`,
      );
      expect((await tls(b)).served).toBeGreaterThan(served);
    }
  }, 180_000);

  it("needs no hub for a stream on a connection punched before the hub was cut; then streams go over libp2p", async () => {
    await roundTrip("p1h1", "f1h1");
    // The spare that stream had punched is ready once the punch and the TLS handshake are done.
    await eventually(async () => (await tls("p1h1")).spares.includes("punched TLS f1h1"), 20_000, "p1h1's spare to f1h1 ready");
    const opened = (await tls("p1h1")).opened;
    await lab.nat.cutHub();
    await roundTrip("p1h1", "f1h1");
    expect((await tls("p1h1")).opened).toBe(opened + 1);
    // No observer, no fabric: the next punch fails, and streams keep flowing on the punched libp2p connection.
    await roundTrip("p1h1", "f1h1");
    await roundTrip("p1h1", "f1h1");
    expect((await tls("p1h1")).opened).toBe(opened + 1);
  }, 60_000);
});
