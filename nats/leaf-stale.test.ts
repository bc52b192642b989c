/**
 * The explainer of a leaf link made and gone stale again and again (nats/leaf-stale.ts), on the
 * lines nats-server 2.9.10 writes: said at the third in a row, not for a link that lived before it
 * was cut, nor for links closed for another reason.
 */
import { describe, expect, it } from "vitest";
import { staleLeafExplainer } from "./leaf-stale.ts";

const made = (id: number) => `[9] 2026/12/06 23:07:15.192 [INF] 198.18.23.2:7422 - lid:${id} - Leafnode connection created for account: $G `;
const gone = (id: number, reason = "Stale Connection") => `[9] 2026/12/06 23:07:16.831 [INF] 198.18.23.2:7422 - lid:${id} - Leafnode connection closed: ${reason} account: $G`;

describe("staleLeafExplainer", () => {
  it("says a link that went stale young three times in a row, naming the remote, the check and the fix", () => {
    let now = 0;
    const explain = staleLeafExplainer(() => now);
    const outcomes: (string | undefined)[] = [];
    for (let id = 1; id <= 3; id++) {
      outcomes.push(explain(made(id)));
      now += 2_000;
      outcomes.push(explain(gone(id)));
      now += 1_000;
    }
    expect(outcomes.slice(0, 5).every((outcome) => outcome === undefined)).toBe(true);
    expect(outcomes[5]).toContain("the leaf link to 198.18.23.2:7422 was made 3 times in a row and each time went stale within 2.0 s");
    expect(outcomes[5]).toContain("ping -M do -s 1472 198.18.23.2");
    expect(outcomes[5]).toContain("TCPMSS --clamp-mss-to-pmtu");
  });

  it("starts again after a link that lived, or one closed for another reason", () => {
    let now = 0;
    const explain = staleLeafExplainer(() => now);
    const link = (id: number, livedMs: number, reason?: string) => {
      explain(made(id));
      now += livedMs;
      return explain(gone(id, reason));
    };
    link(1, 2_000);
    link(2, 2_000);
    expect(link(3, 60_000), "a link that worked for a minute, then was cut").toBeUndefined();
    link(4, 2_000);
    link(5, 2_000);
    expect(link(6, 2_000, "Authorization Violation")).toBeUndefined();
    link(7, 2_000);
    link(8, 2_000);
    expect(link(9, 2_000)).toContain("3 times in a row");
    expect(explain(gone(99)), "a close of a link it did not see made").toBeUndefined();
  });
});
