/**
 * A mirror's lineage (mirror-lineage.ts): a stream of another creation time upstream, or one that holds
 * fewer revisions than the mirror has mirrored, is a stream made again; the same stream, ahead or behind
 * the mirror, is not. The end-to-end case (a hub that lost its store) is test/hub-store-lost.test.ts.
 */
import { describe, expect, it } from "vitest";
import { describeUpstream, lineageBroken } from "./mirror-lineage.ts";

const upstream = { created: "2026-12-05T10:00:00.000Z", lastSeq: 500 };
const mirror = (description: string | undefined, lastSeq: number) => ({ config: { description }, state: { last_seq: lastSeq } }) as Parameters<typeof lineageBroken>[0];

describe("mirror lineage", () => {
  it("keeps a mirror of the same stream, behind it or caught up", () => {
    expect(lineageBroken(mirror(describeUpstream(upstream), 500), upstream)).toBeUndefined();
    expect(lineageBroken(mirror(describeUpstream(upstream), 120), upstream)).toBeUndefined();
    // A mirror made before it recorded its upstream: only the revisions can tell.
    expect(lineageBroken(mirror(undefined, 500), upstream)).toBeUndefined();
    expect(lineageBroken(mirror("someone's own words", 10), upstream)).toBeUndefined();
  });

  it("finds a stream made again by its creation time, even one that holds more revisions than the mirror", () => {
    const remade = { created: "2026-12-05T11:30:00.000Z", lastSeq: 900 };
    expect(lineageBroken(mirror(describeUpstream(upstream), 500), remade)).toMatch(/made again: created 2026-12-05T11:30:00.000Z, where the one this mirror was made from was created 2026-12-05T10:00:00.000Z/);
  });

  it("finds a stream made again by its revisions when the mirror has no record of it", () => {
    expect(lineageBroken(mirror(undefined, 500), { created: "2026-12-05T11:30:00.000Z", lastSeq: 4 })).toMatch(/revisions up to 4, fewer than the 500 this mirror has mirrored/);
  });

  it("records nothing when the upstream could not be asked", () => {
    expect(describeUpstream(undefined)).toBeUndefined();
  });
});
