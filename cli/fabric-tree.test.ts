import { describe, expect, it } from "vitest";
import { drawFabricTree } from "./fabric-tree.ts";

describe("drawFabricTree", () => {
  it("draws regions, hubs, sites and agents from fabric heartbeats", () => {
    const tree = drawFabricTree([
      { node: "edge-b", state: "ready", role: "agent", domain: "edge-b", upstream: "nats-leaf://10.1.0.5:7422", relays: [{ peer: "edge-q", streams: 2 }] },
      { node: "hub-w1", state: "ready", role: "hub", region: "west", leafListen: "0.0.0.0:7422" },
      { node: "hub-e1", state: "ready", role: "hub", region: "east", leafListen: "198.18.0.1:7422" },
      { node: "site-a-1", state: "ready", role: "site", domain: "site-a", upstream: "nats-leaf://198.18.0.1:7422", leafListen: "10.1.0.5:7422" },
      { node: "edge-a", state: "ready", role: "agent", domain: "edge-a", upstream: "nats-leaf://hub-w1.example:7422" },
      { node: "edge-z", state: "backoff", role: "agent", domain: "edge-z", upstream: null },
    ]);
    expect(tree).toBe(
      [
        "region east",
        "  hub hub-e1",
        "    site site-a server site-a-1",
        "      agent edge-b",
        "        ↔ 2 relayed stream(s) with edge-q, through the servers above",
        "region west",
        "  hub hub-w1",
        "    agent edge-a",
        "not attached to any server seen",
        "  agent edge-z [backoff]",
        "",
      ].join("\n"),
    );
  });

  it("places leafs dialled by host name under the server whose address they are connected to, every server on 0.0.0.0:7422", () => {
    // Before: every leaf under the first hub (a wildcard listen address matched them all).
    const tree = drawFabricTree([
      { node: "hub-1", state: "ready", role: "hub", leafListen: "0.0.0.0:7422", addresses: ["198.18.222.11"] },
      { node: "hub-2", state: "ready", role: "hub", leafListen: "0.0.0.0:7422", addresses: ["198.18.222.12"] },
      { node: "shop-7-1", state: "ready", role: "site", domain: "shop-7", upstream: "tls://hub-2.example.net:7422", upstreamAddress: "198.18.222.12:7422", leafListen: "0.0.0.0:7422", addresses: ["198.18.222.21", "fe80::1"] },
      { node: "edge-a", state: "ready", role: "agent", domain: "edge-a", upstream: "tls://hub-2.example.net:7422", upstreamAddress: "198.18.222.12:7422" },
      { node: "edge-b", state: "ready", role: "agent", domain: "edge-b", upstream: "tls://shop-7.lan:7422", upstreamAddress: "198.18.222.21:7422" },
    ]);
    expect(tree).toBe(["cloud", "  hub hub-1", "  hub hub-2", "    site shop-7 server shop-7-1", "      agent edge-b", "    agent edge-a", ""].join("\n"));
  });
});
