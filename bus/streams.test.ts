/**
 * Which failed connects count against an endpoint (outlier ejection): the target's own refusal, here or at the
 * node that runs it, and never a node's own shortage of descriptors, memory or ports, nor the tunnel's failure.
 */
import { describe, expect, it } from "vitest";
import { LeafmeshError } from "../lib/errors.ts";
import { TargetRefusedError } from "../services/tunnel/stream-header.ts";
import { endpointAtFault, isTargetRefusal, localShortageCode, overCapacityCode } from "./streams.ts";

const errno = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1:80`), { code });

describe("endpointAtFault", () => {
  it("holds a refused or timed-out connect from here against the endpoint, not this node's EMFILE, ENFILE, ENOBUFS, ENOMEM or EADDRNOTAVAIL", () => {
    expect(endpointAtFault(errno("ECONNREFUSED"), false)).toBe(true);
    expect(endpointAtFault(errno("ETIMEDOUT"), false)).toBe(true);
    for (const code of ["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM", "EADDRNOTAVAIL"]) {
      expect(endpointAtFault(errno(code), false)).toBe(false);
      expect(localShortageCode(errno(code))).toBe(code);
    }
  });

  it("holds the serving node's answer that the target refused against the endpoint, not that node's own shortage, its limit or a tunnel failure", () => {
    expect(endpointAtFault(new TargetRefusedError("edge-b cannot connect to 10.0.0.5:80: connect ECONNREFUSED", "ECONNREFUSED"), true)).toBe(true);
    const exhausted = new TargetRefusedError("edge-b cannot connect to 10.0.0.5:80: connect EMFILE", "EMFILE");
    expect(isTargetRefusal(exhausted)).toBe(false);
    expect(endpointAtFault(exhausted, true)).toBe(false);
    expect(localShortageCode(exhausted)).toBe("EMFILE");
    expect(endpointAtFault(new TargetRefusedError("edge-b refuses: streams per peer", overCapacityCode), true)).toBe(false);
    expect(endpointAtFault(new LeafmeshError("TUNNEL_FAILED", "no path to edge-b"), true)).toBe(false);
  });
});
