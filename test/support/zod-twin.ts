/**
 * zod's reading of one of our schemas (lib/schema): the same kinds, checks, messages and unknown-key rules,
 * built in zod 4 from the schema's own parts, so a test can hand both the same input and compare what they
 * accept, give back and report. Transforms and refinements are functions and have no twin (none of the
 * compared schemas has one).
 */
import { expect } from "vitest";
import { z as zod } from "zod";
import * as z from "../../lib/schema/index.ts";

function regexOf(text: string | undefined): RegExp {
  const match = /^\/(.*)\/([a-z]*)$/s.exec(text ?? "");
  if (!match) throw new Error(`not a pattern: ${text}`);
  return new RegExp(match[1], match[2]);
}

function stringTwin(schema: z.StringSchema): zod.ZodType {
  let twin = zod.string(schema.typeMessage === undefined ? undefined : { error: schema.typeMessage });
  for (const { issue } of schema.checks) {
    if (issue.code === "too_small") twin = twin.min(issue.minimum, issue.message);
    else if (issue.code === "too_big") twin = twin.max(issue.maximum, issue.message);
    else if (issue.code === "invalid_format" && issue.format === "regex") twin = twin.regex(regexOf(issue.pattern), issue.message);
    else if (issue.code === "invalid_format" && issue.format === "starts_with") twin = twin.startsWith(issue.prefix ?? "", issue.message);
    else if (issue.code === "invalid_format" && issue.format === "includes") twin = twin.includes(issue.includes ?? "", issue.message);
    else throw new Error(`no twin for the string check ${issue.code}`);
  }
  return twin;
}

function numberTwin(schema: z.NumberSchema): zod.ZodType {
  let twin = zod.number(schema.typeMessage === undefined ? undefined : { error: schema.typeMessage });
  for (const { issue } of schema.checks) {
    if (issue.code === "invalid_type") twin = twin.int(issue.message);
    else if ((issue.code === "too_small" || issue.code === "too_big") && issue.origin === "int") continue; // int's own range
    else if (issue.code === "too_small") twin = issue.inclusive ? twin.min(issue.minimum, issue.message) : twin.gt(issue.minimum, issue.message);
    else if (issue.code === "too_big") twin = twin.max(issue.maximum, issue.message);
    else throw new Error(`no twin for the number check ${issue.code}`);
  }
  return twin;
}

export function zodTwin(schema: z.SchemaLike): zod.ZodType {
  if (schema instanceof z.OptionalSchema) return zodTwin(schema.inner).optional();
  if (schema instanceof z.NullableSchema) return zodTwin(schema.inner).nullable();
  if (schema instanceof z.DefaultSchema) return zodTwin(schema.inner).default(schema.defaultValue);
  if (schema instanceof z.StringSchema) return stringTwin(schema);
  if (schema instanceof z.NumberSchema) return numberTwin(schema);
  if (schema instanceof z.BooleanSchema) return zod.boolean();
  if (schema instanceof z.UnknownSchema) return zod.unknown();
  if (schema instanceof z.LiteralSchema) return zod.literal(schema.value, schema.message === undefined ? undefined : { error: schema.message });
  if (schema instanceof z.EnumSchema) return zod.enum(schema.options as [string, ...string[]], schema.message === undefined ? undefined : { error: schema.message });
  if (schema instanceof z.ArraySchema) {
    let twin = zod.array(zodTwin(schema.element));
    if (schema.minimum > 0) twin = twin.min(schema.minimum, schema.messages.min);
    if (schema.maximum < Infinity) twin = twin.max(schema.maximum, schema.messages.max);
    return twin;
  }
  if (schema instanceof z.TupleSchema) return zod.tuple((schema.items as z.SchemaLike[]).map(zodTwin) as [zod.ZodType, ...zod.ZodType[]]);
  if (schema instanceof z.RecordSchema) return zod.record(stringTwin(schema.keys) as zod.ZodString, zodTwin(schema.values));
  if (schema instanceof z.ObjectSchema) {
    const twin = zod.object(Object.fromEntries(Object.entries(schema.shape as z.Shape).map(([key, field]) => [key, zodTwin(field)])));
    return schema.unknownKeys === "strict" ? twin.strict() : schema.unknownKeys === "passthrough" ? twin.passthrough() : twin;
  }
  if (schema instanceof z.UnionSchema) return zod.union((schema.options as z.SchemaLike[]).map(zodTwin));
  if (schema instanceof z.DiscriminatedUnionSchema) {
    return zod.discriminatedUnion(schema.discriminator, (schema.options as z.SchemaLike[]).map(zodTwin) as unknown as [zod.ZodObject, ...zod.ZodObject[]]);
  }
  throw new Error(`no zod twin for ${schema.constructor.name}`);
}

/**
 * A comparison of `schema` with its zod twin on one input: both accept it or both refuse it alike (the same
 * issues: code, path, message, input), what ours gives back equals zod's, and is the input itself where zod's
 * copy equals the input. Returns whether it was accepted and kept as it is.
 */
export function comparerWithZod(schema: z.Schema<unknown, unknown>): (input: unknown) => { accepted: boolean; kept: boolean } {
  const twin = zodTwin(schema);
  return (input) => {
    const ours = schema.safeParse(input, { reportInput: true });
    const theirs = twin.safeParse(input, { reportInput: true });
    const text = JSON.stringify(input);
    expect(ours.success, text).toBe(theirs.success);
    if (ours.success && theirs.success) {
      expect(ours.data, text).toStrictEqual(theirs.data);
      if (JSON.stringify(theirs.data) === text) expect(ours.data, text).toBe(input);
      return { accepted: true, kept: ours.data === input };
    }
    const issues = (list: readonly { code: string; path: readonly PropertyKey[]; message: string; input?: unknown }[]) => list.map(({ code, path, message, input }) => ({ code, path, message, input }));
    // One difference on purpose: zod 4 also runs a list's length check on a value that is no list ("" for
    // `addresses` reports "expected array", then "Too small: expected string to have >=1 characters"); ours
    // stops at the type, as zod does for every other kind.
    const zodIssues = theirs.error!.issues.filter((issue, index, all) => !all.slice(0, index).some((earlier) => earlier.code === "invalid_type" && JSON.stringify(earlier.path) === JSON.stringify(issue.path)));
    expect(issues(ours.error!.issues), text).toEqual(issues(zodIssues));
    return { accepted: false, kept: false };
  };
}
