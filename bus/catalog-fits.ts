/**
 * Whether a value from JSON.parse is already, exactly, a Service or an EndpointSlice as the catalog's zod schemas
 * (bus/catalog.ts) would give it back: every field known, of its type and range, none missing. Such a value is
 * kept as it is; anything else (another kind, a field the tables below do not know, a `__proto__` key, one wrong
 * field) goes through zod, which strips, defaults or refuses it naming the field.
 *
 * Why: an agent decodes every object of its catalog (20,000 at 10,000 services, nearly all of them these two
 * kinds). zod checks each and builds a copy of it, field by field; the parsed original is then garbage for the
 * young generation, and checking and copying were most of a decode's time (bench/fabric, issue 17). The checks
 * are the schemas' own: bus/catalog-fits.test.ts holds the tables to the schemas' fields and compares both on
 * thousands of altered objects.
 *
 * ```ts
 * const parsed = JSON.parse(text);
 * const object = fitsCatalogFastPath(parsed) ? parsed : catalogObjectSchema.parse(parsed);
 * ```
 */
import { protocols, serviceTypes } from "./catalog.ts";

type Check = (value: unknown) => boolean;
/** A table of an object's fields: each one's check and whether it must be there; how many must. */
export interface FieldTable {
  fields: ReadonlyMap<string, { check: Check; required: boolean }>;
  required: number;
}

const isString: Check = (value) => typeof value === "string";
const isBoolean: Check = (value) => typeof value === "boolean";
const isPort: Check = (value) => Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 65_535;
const oneOf = (values: readonly string[]): Check => {
  const allowed = new Set(values);
  return (value) => typeof value === "string" && allowed.has(value);
};
const arrayOf = (check: Check, min = 0): Check => (value) => {
  if (!Array.isArray(value) || value.length < min) return false;
  for (const item of value) if (!check(item)) return false;
  return true;
};
/** A plain object of string values; a `__proto__` key (zod drops it) is left to zod. */
const isStringMap: Check = (value) => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  for (const key in value) if (key === "__proto__" || typeof (value as Record<string, unknown>)[key] !== "string") return false;
  return true;
};

function table(checks: Record<string, Check>, optional: readonly string[] = []): FieldTable {
  const fields = new Map(Object.entries(checks).map(([name, check]) => [name, { check, required: !optional.includes(name) }]));
  return { fields, required: fields.size - optional.length };
}

/** Every key known and fitting, every required one there. A JSON.parse result holds only its own enumerable keys. */
function fits(value: unknown, table: FieldTable): boolean {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  let required = 0;
  for (const key in value) {
    const field = table.fields.get(key);
    if (!field || !field.check((value as Record<string, unknown>)[key])) return false;
    if (field.required) required++;
  }
  return required === table.required;
}
const objectOf = (fields: FieldTable): Check => (value) => fits(value, fields);

/**
 * The tables, made at the first call: bus/catalog.ts imports this module and this one its enums, so they
 * cannot be read while the modules load.
 */
export function catalogFieldTables() {
  tables ??= makeTables();
  return tables;
}
let tables: ReturnType<typeof makeTables> | undefined;

function makeTables() {
  const servicePortFields = table(
    {
      name: isString,
      protocol: oneOf(protocols),
      port: isPort,
      targetPort: (value) => isPort(value) || (typeof value === "string" && value.length >= 1),
      nodePort: isPort,
      appProtocol: isString,
    },
    ["nodePort", "appProtocol"],
  );

  const serviceFields = table(
    {
      kind: (value) => value === "Service",
      namespace: isString,
      name: isString,
      type: oneOf(serviceTypes),
      headless: isBoolean,
      clusterIPs: arrayOf(isString),
      ipFamilies: arrayOf(oneOf(["IPv4", "IPv6"])),
      externalName: isString,
      ports: arrayOf(objectOf(servicePortFields)),
      sessionAffinity: oneOf(["None", "ClientIP"]),
      sessionAffinityTimeoutSeconds: (value) => Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 86_400,
      publishNotReadyAddresses: isBoolean,
      internalTrafficPolicy: oneOf(["Cluster", "Local"]),
      selector: isStringMap,
      labels: isStringMap,
      annotations: isStringMap,
    },
    ["externalName", "internalTrafficPolicy", "selector"],
  );

  const endpointConditionFields = table({ ready: isBoolean, serving: isBoolean, terminating: isBoolean });
  const targetRefFields = table({ kind: isString, namespace: isString, name: isString }, ["namespace"]);

  const endpointFields = table(
    {
      addresses: arrayOf(isString, 1),
      conditions: objectOf(endpointConditionFields),
      hostname: isString,
      nodeName: isString,
      zone: isString,
      targetRef: objectOf(targetRefFields),
    },
    ["hostname", "nodeName", "zone", "targetRef"],
  );

  const endpointPortFields = table({ name: isString, protocol: oneOf(protocols), port: isPort, appProtocol: isString }, ["port", "appProtocol"]);

  const endpointSliceFields = table({
    kind: (value) => value === "EndpointSlice",
    namespace: isString,
    name: isString,
    serviceName: isString,
    addressType: oneOf(["IPv4", "IPv6", "FQDN"]),
    endpoints: arrayOf(objectOf(endpointFields)),
    ports: arrayOf(objectOf(endpointPortFields)),
    labels: isStringMap,
    annotations: isStringMap,
  });
  return { servicePortFields, serviceFields, endpointConditionFields, targetRefFields, endpointFields, endpointPortFields, endpointSliceFields };
}

/** True when `parsed` (from JSON.parse) is a Service or an EndpointSlice that zod would give back unchanged. */
export function fitsCatalogFastPath(parsed: unknown): boolean {
  const kind = (parsed as { kind?: unknown } | null)?.kind;
  if (kind === "Service") return fits(parsed, catalogFieldTables().serviceFields);
  if (kind === "EndpointSlice") return fits(parsed, catalogFieldTables().endpointSliceFields);
  return false;
}
