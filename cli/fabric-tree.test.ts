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
});
