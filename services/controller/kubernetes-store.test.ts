import { describe, expect, it } from "vitest";
import { sampleService } from "../../test/support/manifests.ts";
import { apiVersionOf, qualifiedResource, resourcePath, ResourceStore, withKind, type RawObject, type Refusal, type ResourceSpec } from "./kubernetes-store.ts";

/** A Service as the API sends it, at a resourceVersion. */
function service(name: string, resourceVersion: string, port = 80): RawObject {
  const raw = sampleService({ name, clusterIP: "198.19.0.1", port })[0] as RawObject;
  return { ...raw, metadata: { ...raw.metadata, resourceVersion } };
}

function store() {
  const refusals: Refusal[] = [];
  return { store: new ResourceStore((refusal) => refusals.push(refusal)), refusals };
}

describe("ResourceSpec", () => {
  const services: ResourceSpec = { resource: "services", kind: "Service", group: "", versions: ["v1"], optional: false };
  const rules: ResourceSpec = { resource: "destinationrules", kind: "DestinationRule", group: "networking.istio.io", versions: ["v1", "v1beta1"], optional: true };

  it("names where a resource lives in the API, and how RBAC names it", () => {
    expect(resourcePath(services, "v1")).toBe("/api/v1/services");
    expect(resourcePath(rules, "v1beta1", "demo")).toBe("/apis/networking.istio.io/v1beta1/namespaces/demo/destinationrules");
    expect([apiVersionOf(services, "v1"), apiVersionOf(rules, "v1beta1")]).toEqual(["v1", "networking.istio.io/v1beta1"]);
    expect([qualifiedResource(services), qualifiedResource(rules)]).toEqual(["services", "destinationrules.networking.istio.io"]);
  });
});

describe("ResourceStore", () => {
  it("takes a list in place of what it held, and says what it held before and after", () => {
    const { store: held } = store();
    expect(held.replace([service("a", "1"), service("b", "2")]).after.map((object) => object.name)).toEqual(["a", "b"]);
    const { before, after } = held.replace([service("b", "2")]);
    expect(before.map((object) => object.name)).toEqual(["a", "b"]);
    expect(after.map((object) => object.name)).toEqual(["b"]);
    expect(held.size).toBe(1);
  });

  it("keeps the last good version of an object whose edit is refused, and reports that version once, across relists", () => {
    const { store: held, refusals } = store();
    held.replace([service("web", "1")]);
    expect(held.apply("MODIFIED", service("web", "2", 99_999))).toBeUndefined();
    expect(refusals).toEqual([expect.objectContaining({ object: "Service demo/web", field: "spec.ports[0].port", message: expect.stringMatching(/previous version stays/) })]);
    // A relist that holds the same refused version: nothing new to report, the good version stays.
    expect(held.replace([service("web", "2", 99_999)]).after.map((object) => object.kind === "Service" && object.ports[0].port)).toEqual([80]);
    expect(refusals).toHaveLength(1);
    expect(held.rejected).toBe(1);
    // The fix replaces it.
    const change = held.apply("MODIFIED", service("web", "3", 81));
    expect(change?.after?.kind === "Service" && change.after.ports[0].port).toBe(81);
  });

  it("drops a deleted object, and says nothing of one it never held good", () => {
    const { store: held } = store();
    held.replace([service("web", "1")]);
    held.apply("ADDED", service("bad", "2", 0));
    expect(held.apply("DELETED", service("bad", "3", 0))).toBeUndefined();
    expect(held.apply("DELETED", service("web", "4"))).toEqual({ before: expect.objectContaining({ name: "web" }) });
    expect(held.size).toBe(0);
  });

  it("knows the very version it saw last (how a replaying server is recognised)", () => {
    const { store: held } = store();
    held.replace([service("web", "7")]);
    expect(held.hasSeen(service("web", "7"))).toBe(true);
    expect(held.hasSeen(service("web", "8"))).toBe(false);
    expect(held.hasSeen(service("other", "7"))).toBe(false);
  });

  it("fills in the kind and apiVersion a list leaves out of its items", () => {
    const { kind: _kind, apiVersion: _apiVersion, ...bare } = service("web", "1");
    expect(withKind(bare, "v1", "Service")).toMatchObject({ kind: "Service", apiVersion: "v1" });
    expect(withKind({ ...bare, apiVersion: "v2" }, "v1", "Service").apiVersion).toBe("v2");
  });
});
