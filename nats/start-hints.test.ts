/** What the start's error adds to nats-server's own last lines (nats/start-hints.ts). */
import { describe, expect, it } from "vitest";
import { startFailureHint } from "./start-hints.ts";

describe("startFailureHint", () => {
  it("says what to do for each kind of failure nats-server's fatal line shows, and nothing for others", () => {
    expect(startFailureHint('[FTL] Error listening on port: 127.0.0.1:4222, "listen tcp 127.0.0.1:4222: bind: address already in use"')).toContain("Another process holds one of its addresses");
    // Before: nats-server's line alone, for an address this host does not have or a name that does not resolve.
    expect(startFailureHint('[FTL] Error listening on port: 198.18.9.9:4222, "listen tcp 198.18.9.9:4222: bind: cannot assign requested address"')).toContain("not an address of this host");
    expect(startFailureHint('[FTL] Error listening on port: hub.invalid:4222, "listen tcp: lookup hub.invalid on 10.0.0.53:53: no such host"')).toContain("not an address of this host");
    expect(startFailureHint('[WRN] Healthcheck failed: "JetStream has not established contact with a meta leader"')).toContain("no majority up yet");
    expect(startFailureHint("[FTL] something else")).toBe("");
  });
});
