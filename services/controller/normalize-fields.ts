/**
 * What every normalisation shares (normalize.ts for Services, EndpointSlices and
 * DestinationRules; normalize-gateway.ts for the ingress kinds): how a problem
 * is named (field path and message, in a manifest author's words), the naming
 * rules of Kubernetes objects, and object metadata. Pure.
 */
import * as z from "../../lib/schema/index.ts";

export interface FieldProblem {
  /** "spec.ports[0].port", or "" for the object as a whole. */
  field: string;
  message: string;
}

/** RFC 1035 label: what a Service name must be. */
export const dns1035Label = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** RFC 1123 label: what a namespace must be. */
export const dns1123Label = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** RFC 1123 subdomain: other object names, ExternalName targets. */
export const dns1123Subdomain = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** IANA service name: named target ports and port names. */
export const ianaServiceName = /^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?=[a-z0-9]))*$/;

export const labelMap = z.record(z.string(), z.string()).optional();

export const metadata = z.object({
  name: z.string().min(1, "is required"),
  namespace: z.string().optional(),
  labels: labelMap.nullable(),
  annotations: labelMap.nullable(),
});

/** "spec.ports[0].port" from an issue's path. */
export const fieldPath = z.pathText;

export function schemaProblems(error: z.SchemaError): FieldProblem[] {
  return error.issues.map((issue) => ({ field: fieldPath(issue.path), message: friendlyMessage(issue) }));
}

/** The schema's generic wording ("Invalid input: expected string, received undefined") in a manifest author's terms. */
function friendlyMessage(issue: z.Issue): string {
  if (issue.code === "invalid_type") {
    const received = issue.input;
    if (received === undefined) return "is required";
    // A number that is not whole: the schema's type is "int" (zod's word), which read "must be a int (got number)".
    if (issue.expected === "int") return `must be a whole number (got ${String(received)})`;
    const expected = issue.expected === "array" ? "a list" : issue.expected === "object" || issue.expected === "record" ? "a mapping" : `a ${issue.expected}`;
    return `must be ${expected} (got ${Array.isArray(received) ? "a list" : typeof received})`;
  }
  if (issue.code === "unrecognized_keys") return `has unknown fields ${issue.keys.join(", ")}`;
  return issue.message;
}

export function checkMetadata(meta: z.infer<typeof metadata>, namePattern: RegExp, nameRule: string, problems: FieldProblem[]): string {
  if (!namePattern.test(meta.name)) problems.push({ field: "metadata.name", message: `'${meta.name}' is not a valid name: ${nameRule}` });
  const namespace = meta.namespace ?? "default";
  if (!dns1123Label.test(namespace)) {
    problems.push({ field: "metadata.namespace", message: `'${namespace}' is not a valid namespace: lowercase letters, digits and '-', at most 63 characters` });
  }
  return namespace;
}

