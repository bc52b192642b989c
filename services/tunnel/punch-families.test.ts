/**
 * Two nodes the observer sees in different address families (one IPv4, one IPv6) cannot be
 * punched: no TCP connection joins an IPv4 end to an IPv6 one. The path falls to the relay with
 * that reason (status --why), and an answering node declines such a request with it, instead
 * of punching towards an address its sockets cannot reach. A real observer on loopback measures
 * this node (IPv4); the peer's record and request carry an IPv6 address.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NodeRecord } from "../../bus/node-record.ts";
import { silentLogger } from "../../lib/log.ts";
import { freePort } from "../../test/support/ports.ts";
import { startObserver, type Observer } from "./nat.ts";
import { PunchCoordinator } from "./punch-coordinator.ts";

let observer: Observer;
let coordinator: PunchCoordinator;

beforeAll(async () => {
  const ports: [number, number] = [await freePort(), await freePort()];
  observer = await startObserver({ hosts: ["127.0.0.1", "127.0.0.2"], ports, log: silentLogger() });
  coordinator = new PunchCoordinator({
    nats: undefined as never,
    bus: undefined as never,
    node: "edge-a",
    log: silentLogger(),
    observer: { host: "127.0.0.1", ports },
    recordOf: () => undefined,
    peerId: () => "peer-a",
    servesTlsStreams: () => true,
    onPunched: () => undefined,
  });
  await coordinator.detectNow();
});
afterAll(async () => {
  coordinator?.stop();
  await observer?.close();
});

describe("punches across address families", () => {
  it("are not tried: the reason names both families, and an answering node declines with it", async () => {
    expect(coordinator.mapped?.host).toBe("127.0.0.1");
    const record: NodeRecord = { node: "edge-b", peerId: "peer-b", listen: [], observed: [{ host: "fd00:62::10", port: 4101 }], nat: "port-restricted", relay: true, pskFingerprint: "0000000000000000", at: new Date().toISOString() };
    expect(coordinator.cannotPunch(record)).toBe("not possible across address families: the observer sees this node at IPv4 127.0.0.1, edge-b at IPv6 fd00:62::10 (relayed)");
    await expect(coordinator.punch(record, "libp2p")).rejects.toThrow(/not possible across address families/);
    const answer = await coordinator.answer({ from: "edge-b", peerId: "peer-b", nat: "port-restricted", mapped: { host: "fd00:62::10", port: 40000 }, purpose: "tls-stream" });
    expect(answer).toEqual({ error: "not possible across address families: the observer sees this node at IPv4 127.0.0.1, edge-b at IPv6 fd00:62::10 (relayed)" });
    // The same family is tried as before.
    expect(coordinator.cannotPunch({ ...record, observed: [{ host: "127.0.0.9", port: 4101 }] })).toBeUndefined();
  });
});
