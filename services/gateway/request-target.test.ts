/** The target a request is routed and forwarded by: absolute form, and paths normalized as Istio's gateways do. */
import { describe, expect, it } from "vitest";
import { normalizePath, requestTarget } from "./request-target.ts";

describe("a request's target", () => {
  it("takes an absolute form's authority over Host, and sends on the origin form", () => {
    expect(requestTarget("http://shop.example.com/api/x?y=1", "other.org")).toEqual({ authority: "shop.example.com", path: "/api/x", target: "/api/x?y=1" });
    expect(requestTarget("HTTPS://shop.example.com:8443?q", "other.org")).toEqual({ authority: "shop.example.com:8443", path: "/", target: "/?q" });
    expect(requestTarget("/api?y=1", "shop.example.com")).toEqual({ authority: "shop.example.com", path: "/api", target: "/api?y=1" });
    // asterisk and authority forms are not paths: as they came
    expect(requestTarget("*", "shop.example.com")).toEqual({ authority: "shop.example.com", path: "*", target: "*" });
  });

  it("removes dot segments, plain or percent-encoded, so a rule is matched on the path the backend reads", () => {
    const cases: [string, string][] = [
      ["/web/../admin", "/admin"],
      ["/web/%2e%2e/admin", "/admin"],
      ["/web/%2E./admin", "/admin"],
      ["/./api", "/api"],
      ["/a/b/./c/.", "/a/b/c/"],
      ["/a/b/..", "/a/"],
      ["/..", "/"],
      ["/../../etc", "/etc"],
      ["/.hidden/..x/file.", "/.hidden/..x/file."],
    ];
    for (const [raw, normal] of cases) expect(normalizePath(raw), raw).toBe(normal);
  });

  it("decodes unreserved characters, upper-cases the other encodings, and keeps %2F and repeated slashes (Istio's BASE)", () => {
    expect(normalizePath("/%61pi/%7euser")).toBe("/api/~user");
    expect(normalizePath("/a%2fb/%3f")).toBe("/a%2Fb/%3F");
    expect(normalizePath("//api")).toBe("//api");
    expect(normalizePath("/bad%zz%4")).toBe("/bad%zz%4");
    expect(requestTarget("/web/..%2fadmin?x=/../y", "h")).toEqual({ authority: "h", path: "/web/..%2Fadmin", target: "/web/..%2Fadmin?x=/../y" });
  });
});
