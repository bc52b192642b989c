/**
 * leafmesh's schemas: what the mesh checks of its bus payloads, catalog objects, manifests, configuration and
 * trust files, in the part of zod's vocabulary the project uses (zod 4 cost an agent ~6 MiB of memory and
 * ~60 ms of start for the whole of itself; docs/performance.md). The same calls, the same issue codes and
 * default messages, the same types inferred from a schema.
 *
 * One difference that is the point: a value that fits is given back as it is, not copied. Only a change
 * (an unknown key stripped, a default filled in, a transform) makes a copy of the object or list it is in.
 *
 * ```ts
 * import * as z from "../lib/schema/index.ts";
 *
 * const port = z.object({ name: z.string().optional(), port: z.number().int().min(1).max(65535) });
 * type Port = z.infer<typeof port>; // { name?: string; port: number }
 * const checked = port.safeParse(JSON.parse(text), { reportInput: true });
 * if (!checked.success) for (const issue of checked.error.issues) console.log(issue.path, issue.code, issue.message);
 * ```
 */
import { messageOf, type Message } from "./issues.ts";
import { ArraySchema, DiscriminatedUnionSchema, ObjectSchema, RecordSchema, TupleSchema, UnionSchema, type Shape } from "./composites.ts";
import { BooleanSchema, EnumSchema, LiteralSchema, NumberSchema, StringSchema, UnknownSchema, type Primitive } from "./scalars.ts";
import type { SchemaLike } from "./schema.ts";

export { SchemaError, pathText, type Issue, type IssueCode, type PathKey } from "./issues.ts";
export { NEVER, metaOf, Schema, OptionalSchema, NullableSchema, DefaultSchema, TransformSchema, RefineSchema, type RefinementContext, type SchemaLike, type SafeParseResult, type ParseOptions } from "./schema.ts";
export { ArraySchema, DiscriminatedUnionSchema, ObjectSchema, RecordSchema, TupleSchema, UnionSchema, type Shape } from "./composites.ts";
export { BooleanSchema, EnumSchema, LiteralSchema, NumberSchema, StringSchema, UnknownSchema } from "./scalars.ts";
export type { Output as infer, Output as output, Input as input } from "./schema.ts";

type AnySchema = SchemaLike;

export function string(message?: Message): StringSchema {
  return new StringSchema([], messageOf(message));
}

export function number(message?: Message): NumberSchema {
  return new NumberSchema([], messageOf(message));
}

export function boolean(): BooleanSchema {
  return new BooleanSchema();
}

export function unknown(): UnknownSchema {
  return new UnknownSchema();
}

export function literal<const V extends Primitive>(value: V, message?: Message): LiteralSchema<V> {
  return new LiteralSchema(value, messageOf(message));
}

function enumOf<const V extends readonly [string, ...string[]]>(values: V, message?: Message): EnumSchema<V[number]> {
  return new EnumSchema<V[number]>(values, messageOf(message));
}
export { enumOf as enum };

export function array<S extends AnySchema>(element: S): ArraySchema<S> {
  return new ArraySchema(element);
}

export function tuple<const T extends readonly AnySchema[]>(items: T): TupleSchema<T> {
  return new TupleSchema(items);
}

export function record<K extends StringSchema, V extends AnySchema>(keys: K, values: V): RecordSchema<K, V> {
  return new RecordSchema(keys, values);
}

/** Unknown keys are dropped (`.strict()` refuses them, `.passthrough()` keeps them). */
export function object<S extends Shape>(shape: S): ObjectSchema<S> {
  return new ObjectSchema(shape);
}

export function union<const O extends readonly AnySchema[]>(options: O): UnionSchema<O> {
  return new UnionSchema(options);
}

export function discriminatedUnion<D extends string, const O extends readonly ObjectSchema<Shape>[]>(discriminator: D, options: O): DiscriminatedUnionSchema<D, O> {
  return new DiscriminatedUnionSchema(discriminator, options);
}
