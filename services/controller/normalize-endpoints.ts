/**
 * A core/v1 Endpoints object in a manifest, read as the EndpointSlice that
 * Kubernetes' EndpointSlice mirroring controller makes of it. A Service without
 * a selector gets its backends from an Endpoints object written by hand (the
 * pattern the Kubernetes documentation shows for a database outside the
 * cluster); from the API its mirrored slice comes by itself, from manifests it
 * does not, and the Service had no endpoints without a word. It is mirrored
 * whatever its Service (a `kubectl get ep` export of a Service with a selector
 * too): an endpoint that its EndpointSlice also lists counts once, as traffic
 * and DNS count an address once per Service.
 *
 * ```ts
 * const mirrored = mirrorEndpoints(raw); // { slice: { apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice", ... } } | { problems } | "skipped"
 * ```
 */
import { isIP } from "node:net";
import type { FieldProblem } from "./normalize-fields.ts";

interface RawAddress {
  ip?: unknown;
  hostname?: unknown;
  nodeName?: unknown;
  targetRef?: unknown;
}
interface RawSubset {
  addresses?: RawAddress[] | null;
  notReadyAddresses?: RawAddress[] | null;
  ports?: { name?: unknown; port?: unknown; protocol?: unknown; appProtocol?: unknown }[] | null;
}
interface RawEndpoints {
  metadata?: { name?: unknown; namespace?: unknown; labels?: Record<string, string> | null; annotations?: Record<string, string> | null };
  subsets?: RawSubset[] | null;
}

/** The mirroring controller's name for the slices it makes, and its opt-out label. */
export const mirroredBy = "endpointslicemirroring-controller.k8s.io";
const skipMirrorLabel = "endpointslice.kubernetes.io/skip-mirror";

const portsKey = (subset: RawSubset) =>
  JSON.stringify((subset.ports ?? []).map((port) => [port.name ?? "", port.protocol ?? "TCP", port.port]).sort((a, b) => String(a).localeCompare(String(b))));

/**
 * The EndpointSlice (as a raw object, for the EndpointSlice normalisation) of one Endpoints object; problems in the
 * Endpoints' own terms; "skipped" when it opts out of mirroring. Its subsets must share one port list and one IP
 * family: the controller would make a slice of each, leafmesh asks for EndpointSlices written out instead.
 */
export function mirrorEndpoints(input: unknown): { slice: object } | { problems: FieldProblem[] } | "skipped" {
  const raw = input as RawEndpoints;
  if (raw.metadata?.labels?.[skipMirrorLabel] === "true") return "skipped";
  const name = typeof raw.metadata?.name === "string" ? raw.metadata.name : "";
  const problems: FieldProblem[] = [];
  if (!name) problems.push({ field: "metadata.name", message: "is required" });
  const subsets = Array.isArray(raw.subsets) ? raw.subsets : [];
  const families = new Set<number>();
  const endpoints: object[] = [];
  subsets.forEach((subset, index) => {
    if (index > 0 && portsKey(subset) !== portsKey(subsets[0])) {
      problems.push({ field: `subsets[${index}].ports`, message: "differ from subsets[0].ports: leafmesh reads one port list per Endpoints object (write EndpointSlices instead)" });
    }
    for (const [list, ready] of [["addresses", true], ["notReadyAddresses", false]] as const) {
      (subset[list] ?? []).forEach((address, position) => {
        const family = typeof address.ip === "string" ? isIP(address.ip) : 0;
        if (family === 0) {
          problems.push({ field: `subsets[${index}].${list}[${position}].ip`, message: `'${String(address.ip)}' is not an IP address` });
          return;
        }
        families.add(family);
        endpoints.push({
          addresses: [address.ip],
          conditions: { ready },
          ...(typeof address.hostname === "string" ? { hostname: address.hostname } : {}),
          ...(typeof address.nodeName === "string" ? { nodeName: address.nodeName } : {}),
        });
      });
    }
  });
  if (families.size > 1) problems.push({ field: "subsets", message: "mixes IPv4 and IPv6 addresses: leafmesh reads one family per Endpoints object (write EndpointSlices instead)" });
  if (problems.length > 0) return { problems };
  return {
    slice: {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: {
        // A name of its own: an EndpointSlice of the same Service may be in the same manifests.
        name: `${name}-mirrored`,
        namespace: raw.metadata?.namespace,
        labels: { ...(raw.metadata?.labels ?? {}), "kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": mirroredBy },
        annotations: raw.metadata?.annotations ?? {},
      },
      addressType: families.has(6) ? "IPv6" : "IPv4",
      endpoints,
      ports: (subsets[0]?.ports ?? []).map((port) => ({ name: port.name ?? "", protocol: port.protocol ?? "TCP", port: port.port, ...(port.appProtocol !== undefined ? { appProtocol: port.appProtocol } : {}) })),
    },
  };
}
