/**
 * The validator kind by kind: what each accepts, refuses (code, path, message), and gives back, and that a value
 * which fits is given back as itself, not a copy.
 */
import { describe, expect, it } from "vitest";
import * as z from "./index.ts";

/** The issues of a failed parse, without the values. */
function issuesOf(schema: z.Schema<unknown, unknown>, input: unknown) {
  const result = schema.safeParse(input);
  if (result.success) throw new Error(`expected a failure, got ${JSON.stringify(result.data)}`);
  return result.error.issues.map(({ code, path, message }) => ({ code, path, message }));
}

describe("strings", () => {
  it("checks type, length, pattern, prefix and inclusion, every check that fails", () => {
    expect(z.string().parse("x")).toBe("x");
    expect(issuesOf(z.string(), 5)).toEqual([{ code: "invalid_type", path: [], message: "Invalid input: expected string, received number" }]);
    expect(issuesOf(z.string(), undefined)[0].message).toBe("Invalid input: expected string, received undefined");
    expect(issuesOf(z.string().min(16).regex(/^a+$/), "b")).toEqual([
      { code: "too_small", path: [], message: "Too small: expected string to have >=16 characters" },
      { code: "invalid_format", path: [], message: "Invalid string: must match pattern /^a+$/" },
    ]);
    expect(issuesOf(z.string().max(3), "abcd")[0].message).toBe("Too big: expected string to have <=3 characters");
    expect(issuesOf(z.string().startsWith("SU").includes("X"), "ab").map((issue) => issue.message)).toEqual(['Invalid string: must start with "SU"', 'Invalid string: must include "X"']);
    expect(issuesOf(z.string().min(1, "is required"), "")[0].message).toBe("is required");
    expect(issuesOf(z.string().regex(/^a$/, { message: "an a" }), "b")[0].message).toBe("an a");
  });

  it("tests a global pattern from its start every time", () => {
    const schema = z.string().regex(/a/g);
    for (let round = 0; round < 3; round++) expect(schema.safeParse("a").success).toBe(true);
  });
});

describe("numbers", () => {
  it("refuses what is not a finite number", () => {
    for (const input of ["1", NaN, Infinity, null]) expect(issuesOf(z.number(), input)[0].code).toBe("invalid_type");
    expect(issuesOf(z.number(), NaN)[0].message).toBe("Invalid input: expected number, received NaN");
    expect(issuesOf(z.number({ error: "must be a number" }), "x")[0].message).toBe("must be a number");
  });

  it("checks int (which ends the checks), bounds, positive and nonnegative", () => {
    const port = z.number().int("must be an integer").min(1, "must be 1 to 65535").max(65535, "must be 1 to 65535");
    expect(port.parse(80)).toBe(80);
    expect(issuesOf(port, 0.5)).toEqual([{ code: "invalid_type", path: [], message: "must be an integer" }]);
    expect(issuesOf(port, 0)).toEqual([{ code: "too_small", path: [], message: "must be 1 to 65535" }]);
    expect(issuesOf(z.number().int(), 2 ** 60)[0]).toMatchObject({ code: "too_big", message: "Too big: expected int to be <=9007199254740991" });
    expect(issuesOf(z.number().int().min(1), 0.5)[0].message).toBe("Invalid input: expected int, received number");
    expect(issuesOf(z.number().min(1), 0)[0].message).toBe("Too small: expected number to be >=1");
    expect(issuesOf(z.number().max(10), 11)[0].message).toBe("Too big: expected number to be <=10");
    expect(issuesOf(z.number().positive(), 0)[0].message).toBe("Too small: expected number to be >0");
    expect(issuesOf(z.number().nonnegative(), -1)[0].message).toBe("Too small: expected number to be >=0");
    expect(z.number().nonnegative().parse(0)).toBe(0);
  });
});

describe("booleans, literals, enums, unknown", () => {
  it("accepts exactly its values", () => {
    expect(z.boolean().parse(false)).toBe(false);
    expect(issuesOf(z.boolean(), "true")[0].message).toBe("Invalid input: expected boolean, received string");
    expect(z.literal("v1").parse("v1")).toBe("v1");
    expect(issuesOf(z.literal("v1"), "v2")).toEqual([{ code: "invalid_value", path: [], message: 'Invalid input: expected "v1"' }]);
    expect(issuesOf(z.literal("v1", { error: "must be v1" }), undefined)[0].message).toBe("must be v1");
    expect(z.enum(["a", "b"]).parse("b")).toBe("b");
    expect(issuesOf(z.enum(["a", "b"]), 5)).toEqual([{ code: "invalid_value", path: [], message: 'Invalid option: expected one of "a"|"b"' }]);
    expect(issuesOf(z.enum(["a", "b"], { error: "must be a or b" }), "c")[0].message).toBe("must be a or b");
    expect(issuesOf(z.enum(["toString"]), "constructor")[0].code).toBe("invalid_value");
    const anything = { deep: [1] };
    expect(z.unknown().parse(anything)).toBe(anything);
  });
});

describe("objects", () => {
  const port = z.object({ name: z.string().optional(), port: z.number().int().min(1) });

  it("gives back an object that fits as itself, at every depth", () => {
    const schema = z.object({ spec: z.object({ ports: z.array(port), labels: z.record(z.string(), z.string()) }), at: z.tuple([z.string(), z.number()]) });
    const input = { spec: { ports: [{ name: "a", port: 1 }, { port: 2 }], labels: { app: "web" } }, at: ["x", 1] };
    const output = schema.parse(input);
    expect(output).toBe(input);
    expect(output.spec.ports[1]).toBe(input.spec.ports[1]);
  });

  it("strips unknown keys by default: a copy of that level only, its unchanged parts shared", () => {
    const inner = { ports: [{ port: 1 }] };
    const input = { spec: inner, extra: true };
    const output = z.object({ spec: z.object({ ports: z.array(port) }) }).parse(input);
    expect(output).toEqual({ spec: inner });
    expect(output).not.toBe(input);
    expect(output.spec).toBe(inner);
    expect(input).toEqual({ spec: inner, extra: true });
  });

  it("copies the path down to a changed part and no further", () => {
    const schema = z.object({ a: z.object({ b: z.object({ c: z.string().default("d") }) }), other: z.object({ x: z.number() }) });
    const other = { x: 1 };
    const input = { a: { b: {} }, other };
    const output = schema.parse(input);
    expect(output).toEqual({ a: { b: { c: "d" } }, other: { x: 1 } });
    expect(output.other).toBe(other);
    expect(input.a.b).toEqual({});
  });

  it("refuses unknown keys with strict, keeps them with passthrough", () => {
    expect(issuesOf(z.object({ a: z.string() }).strict(), { a: "x", b: 1, c: 2 })).toEqual([{ code: "unrecognized_keys", path: [], message: 'Unrecognized keys: "b", "c"' }]);
    expect(issuesOf(z.object({ a: z.string() }).strict(), { b: 1 }).map((issue) => issue.code)).toEqual(["invalid_type", "unrecognized_keys"]);
    const loose = { a: "x", b: 1 };
    expect(z.object({ a: z.string() }).passthrough().parse(loose)).toBe(loose);
  });

  it("makes every field optional with partial", () => {
    const schema = z.object({ kind: z.string(), name: z.string() }).partial();
    expect(schema.parse({})).toEqual({});
    expect(issuesOf(schema, { kind: 1 })[0].path).toEqual(["kind"]);
  });

  it("names the path of a nested issue, every issue of the object in the shape's order", () => {
    const schema = z.object({ spec: z.object({ ports: z.array(port) }), name: z.string() });
    expect(issuesOf(schema, { spec: { ports: [{ port: 1 }, { port: "x", name: 2 }] } })).toEqual([
      { code: "invalid_type", path: ["spec", "ports", 1, "name"], message: "Invalid input: expected string, received number" },
      { code: "invalid_type", path: ["spec", "ports", 1, "port"], message: "Invalid input: expected number, received string" },
      { code: "invalid_type", path: ["name"], message: "Invalid input: expected string, received undefined" },
    ]);
  });

  it("reports the failing value only when asked (it may be a secret)", () => {
    const schema = z.object({ key: z.number() });
    expect(schema.safeParse({ key: "secret" }).error?.issues[0].input).toBeUndefined();
    expect(schema.safeParse({ key: "secret" }, { reportInput: true }).error?.issues[0].input).toBe("secret");
    expect(schema.safeParse({}, { reportInput: true }).error?.issues[0]).not.toHaveProperty("input");
  });

  it("leaves a missing optional key out, keeps one given as undefined", () => {
    const schema = z.object({ a: z.string().optional(), b: z.string().default("x") });
    expect(Object.keys(schema.parse({}))).toEqual(["b"]);
    expect(Object.keys(schema.parse({ a: undefined }))).toEqual(["a", "b"]);
  });

  it("refuses what is not an object", () => {
    for (const input of [null, [], "x", 1]) expect(issuesOf(z.object({}), input)[0]).toMatchObject({ code: "invalid_type", path: [] });
    expect(issuesOf(z.object({}), null)[0].message).toBe("Invalid input: expected object, received null");
    expect(issuesOf(z.object({}), [])[0].message).toBe("Invalid input: expected object, received array");
  });
});

describe("lists, tuples and records", () => {
  it("checks a list's items and length, copying it only where an item changed", () => {
    expect(issuesOf(z.array(z.string()).min(1, "needs at least one"), [])[0].message).toBe("needs at least one");
    expect(issuesOf(z.array(z.string()).min(1), [])[0].message).toBe("Too small: expected array to have >=1 items");
    expect(issuesOf(z.array(z.string()).max(1), ["a", "b"])[0].message).toBe("Too big: expected array to have <=1 items");
    const list = [{ a: "x" }, { a: "y", b: 1 }];
    const output = z.array(z.object({ a: z.string() })).parse(list);
    expect(output).toEqual([{ a: "x" }, { a: "y" }]);
    expect(output[0]).toBe(list[0]);
    expect(list[1]).toEqual({ a: "y", b: 1 });
  });

  it("checks a tuple's length and items", () => {
    const pair = z.tuple([z.string(), z.number()]);
    expect(issuesOf(pair, ["a"])[0].message).toBe("Too small: expected array to have >=2 items");
    expect(issuesOf(pair, ["a", 1, 2])[0].message).toBe("Too big: expected array to have <=2 items");
    expect(issuesOf(pair, ["a", "b"])[0].path).toEqual([1]);
  });

  it("checks a record's values by key", () => {
    const labels = z.record(z.string(), z.string());
    const input = { app: "web", constructor: "x" };
    expect(labels.parse(input)).toBe(input);
    expect(issuesOf(labels, { a: 1 })).toEqual([{ code: "invalid_type", path: ["a"], message: "Invalid input: expected string, received number" }]);
    expect(issuesOf(labels, [])[0].message).toBe("Invalid input: expected record, received array");
    expect(issuesOf(z.record(z.string().min(2), z.string()), { a: "b" })[0]).toMatchObject({ code: "too_small", path: ["a"] });
  });
});

describe("optional, nullable, default", () => {
  it("lets undefined or null through, or fills in a default (a copy of it each time)", () => {
    expect(z.string().optional().parse(undefined)).toBeUndefined();
    expect(z.string().nullable().parse(null)).toBeNull();
    expect(issuesOf(z.string().nullable(), undefined)[0].code).toBe("invalid_type");
    const schema = z.object({ listen: z.object({ host: z.string(), port: z.number() }).default({ host: "127.0.0.1", port: 53 }) });
    const first = schema.parse({});
    first.listen.port = 1;
    expect(schema.parse({}).listen).toEqual({ host: "127.0.0.1", port: 53 });
  });
});

describe("transform and refine", () => {
  const number = z
    .string()
    .default("7")
    .transform((text, context) => {
      const value = Number(text);
      if (!Number.isInteger(value)) {
        context.addIssue({ code: "custom", message: `'${text}' is not a whole number` });
        return z.NEVER;
      }
      return value;
    });

  it("turns the checked value into another, or refuses it with its own message", () => {
    expect(number.parse("3")).toBe(3);
    expect(number.parse(undefined)).toBe(7);
    expect(issuesOf(z.object({ ttl: number }), { ttl: "x" })).toEqual([{ code: "custom", path: ["ttl"], message: "'x' is not a whole number" }]);
    expect(issuesOf(number, 3)[0].code).toBe("invalid_type");
  });

  it("refines a value that passed its schema, only then", () => {
    const version = z.string().refine((text) => text === "v1", { message: "must be v1" });
    expect(version.parse("v1")).toBe("v1");
    expect(issuesOf(version, "v2")).toEqual([{ code: "custom", path: [], message: "must be v1" }]);
    expect(issuesOf(version, 2)[0].code).toBe("invalid_type");
    expect(issuesOf(z.string().refine(() => false), "x")[0].message).toBe("Invalid input");
  });
});

describe("unions", () => {
  const targetPort = z.union([z.number().int().min(1), z.string().min(1)]);

  it("takes the first option that fits", () => {
    expect(targetPort.parse(8080)).toBe(8080);
    expect(targetPort.parse("http")).toBe("http");
  });

  it("says invalid_union when no option got past its type, an option's own issues when one did", () => {
    expect(targetPort.safeParse(true).error?.issues).toMatchObject([{ code: "invalid_union", message: "Invalid input", errors: [[{ code: "invalid_type" }], [{ code: "invalid_type" }]] }]);
    expect(issuesOf(targetPort, 0)).toEqual([{ code: "too_small", path: [], message: "Too small: expected number to be >=1" }]);
    expect(issuesOf(targetPort, "")).toEqual([{ code: "too_small", path: [], message: "Too small: expected string to have >=1 characters" }]);
  });

  const kinds = z.discriminatedUnion("kind", [z.object({ kind: z.literal("A"), a: z.string() }), z.object({ kind: z.literal("B") })]);

  it("picks a discriminated option by its field, and says which values it knows", () => {
    const input = { kind: "A", a: "x" };
    expect(kinds.parse(input)).toBe(input);
    expect(issuesOf(kinds, { kind: "A", a: 1 })[0].path).toEqual(["a"]);
    expect(issuesOf(kinds, { kind: "C" })).toEqual([{ code: "invalid_union", path: ["kind"], message: "Invalid discriminator value. Expected 'A' | 'B'" }]);
    expect(issuesOf(kinds, 5)[0].message).toBe("Invalid input: expected object, received number");
  });
});

describe("hostile input", () => {
  const labels = z.record(z.string(), z.string());

  it("never lets a __proto__ key of JSON reach a prototype, in any kind of object", () => {
    const text = '{"__proto__": {"polluted": "yes"}, "constructor": {"prototype": {"polluted": "yes"}}, "a": "b"}';
    const strip = z.object({ a: z.string() }).parse(JSON.parse(text));
    expect(strip).toEqual({ a: "b" });
    expect(Object.getPrototypeOf(strip)).toBe(Object.prototype);
    const loose = z.object({ a: z.string() }).passthrough().parse(JSON.parse(text)) as Record<string, unknown>;
    expect(Object.getPrototypeOf(loose)).toBe(Object.prototype);
    expect(Object.hasOwn(loose, "__proto__")).toBe(false);
    expect(loose.constructor).toEqual({ prototype: { polluted: "yes" } });
    expect(issuesOf(z.object({ a: z.string() }).strict(), JSON.parse(text))[0].message).toBe('Unrecognized keys: "__proto__", "constructor"');
    const record = labels.parse(JSON.parse('{"__proto__": "x", "constructor": "y", "a": "b"}'));
    expect(Object.getPrototypeOf(record)).toBe(Object.prototype);
    expect(Object.hasOwn(record, "__proto__")).toBe(false);
    expect(record).toEqual({ constructor: "y", a: "b" });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(() => z.object(JSON.parse('{"__proto__": 1}'))).toThrow(TypeError);
  });

  it("fails a value nested deeper than its schema at the schema's depth, without a stack overflow", () => {
    let deep: unknown = "x";
    for (let depth = 0; depth < 100_000; depth++) deep = { child: deep, list: [deep] };
    const tree = z.object({ child: z.object({ child: z.object({ child: z.string() }) }) });
    expect(issuesOf(tree, deep)[0].path).toEqual(["child", "child", "child"]);
    expect(z.record(z.string(), z.unknown()).parse(deep)).toBe(deep);
  });

  it("checks a large input in one pass, giving it back as it is", () => {
    const services = Array.from({ length: 100_000 }, (_, index) => ({ name: `svc-${index}`, ports: [{ port: 1 + (index % 65_535) }], labels: { app: "web" } }));
    const schema = z.array(z.object({ name: z.string(), ports: z.array(z.object({ name: z.string().optional(), port: z.number().int().min(1).max(65_535) })), labels: z.record(z.string(), z.string()) }));
    expect(schema.parse(services)).toBe(services);
    const labels = Object.fromEntries(Array.from({ length: 100_000 }, (_, index) => [`k${index}`, "v"]));
    expect(z.record(z.string(), z.string()).parse(labels)).toBe(labels);
  });
});

describe("errors and metadata", () => {
  it("throws a SchemaError naming each field, never the value", () => {
    const schema = z.object({ spec: z.object({ port: z.number(), key: z.string().min(40) }) });
    const error = (() => {
      try {
        schema.parse({ spec: { port: "eighty", key: "secret-key" } });
      } catch (caught) {
        return caught;
      }
    })();
    expect(error).toBeInstanceOf(z.SchemaError);
    expect((error as Error).message).toBe("spec.port: Invalid input: expected number, received string; spec.key: Too small: expected string to have >=40 characters");
    expect((error as Error).message).not.toContain("secret");
    expect(z.pathText(["spec", "ports", 0, "port"])).toBe("spec.ports[0].port");
  });

  it("keeps metadata given to a schema, as --help reads it", () => {
    const schema = z.boolean().default(false).meta({ description: "run in the foreground", short: "f" });
    expect(z.metaOf(schema)).toEqual({ description: "run in the foreground", short: "f" });
    expect(schema).toBeInstanceOf(z.DefaultSchema);
    expect((schema as z.DefaultSchema<z.BooleanSchema>).defaultValue).toBe(false);
    expect(z.metaOf(z.boolean())).toBeUndefined();
  });
});
