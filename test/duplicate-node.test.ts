/**
 * Two machines that run under one node name (a cloned image, a copied config): the hub refuses the second
 * leaf as a duplicate and the two take the link from each other every second. Each agent says why, once,
 * in words an operator can act on; an agent alone that reconnects is not accused.
 */
import { afterAll, describe, expect, it } from "vitest";
import { duplicateNodeExplainer } from "../trust/denials.ts";
import { eventually } from "./support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses } from "./support/processes.ts";

afterAll(async () => {
  await stopAllProcesses();
});

const said = "another machine runs as node 'edge-a': the hub refuses this node's leaf as a duplicate again and again";

describe("two agents under one node name", () => {
  it("each says that another machine runs under its name, once", { timeout: 90_000 }, async () => {
    const hub = await startHubProcess({ name: "hub-1" });
    const first = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl] });
    const second = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], waitReady: false });
    for (const agent of [first, second]) await eventually(() => agent.output().includes(said), 30_000, "the agent to say another machine runs under its name");
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    for (const agent of [first, second]) expect(agent.output().split(said)).toHaveLength(2);
  });

  it("does not accuse one reconnect: three duplicates within a minute, not one or two, nor three spread over minutes", () => {
    let now = 0;
    const explain = duplicateNodeExplainer("edge-a", () => now);
    const duplicate = "[ERR] 127.0.0.1:7422 - lid:17 - Leafnode Error 'Duplicate Remote LeafNode Connection'";
    expect(explain("[INF] Server is ready")).toBeUndefined();
    expect(explain(duplicate)).toBeUndefined();
    now += 40_000;
    expect(explain(duplicate)).toBeUndefined();
    now += 40_000; // the first is over a minute old
    expect(explain(duplicate)).toBeUndefined();
    now += 1_000;
    expect(explain(duplicate)).toContain(said);
  });
});
