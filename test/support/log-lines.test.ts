import { describe, expect, it } from "vitest";
import { repeatedNames } from "./log-lines.ts";

describe("repeatedNames", () => {
  it("finds a name an object repeats, at the top and inside, and nothing in objects that differ", () => {
    expect(repeatedNames('{"actor":"agent","actor":"gateway","msg":"x"}')).toEqual(["actor"]);
    expect(repeatedNames('{"a":{"b":1,"b":2},"c":[{"d":1,"d":2},{"d":3}]}')).toEqual(["a.b", "c[].d"]);
    expect(repeatedNames('{"a":{"b":1},"c":{"b":2},"s":"\\"b\\":1,\\"b\\":"}')).toEqual([]);
    expect(repeatedNames('{"k\\"":1,"k\\"" :2}')).toEqual(['k"']);
  });

  it("refuses text that is not JSON", () => {
    expect(() => repeatedNames("INFO agent ready")).toThrow();
  });
});
