/**
 * The schema every kind extends (parse, safeParse and the modifiers), the modifiers themselves (optional,
 * nullable, default, transform, refine) and the metadata registry `--help` reads (cli/options.ts).
 *
 * The one rule of `check`: a value that fits as it is comes back as the same value, not a copy. A kind makes
 * a new value only where it changes something (an unknown key stripped, a default filled in, a transform's
 * result), and the object or list around it then copies itself with the new part: most of what the mesh
 * decodes (its catalog, 20,000 objects at 10,000 services) is kept as JSON.parse made it.
 */
import { addIssue, finish, messageOf, newContext, SchemaError, type Context, type Issue, type Message } from "./issues.ts";

export interface ParseOptions {
  /** Put the failing value into each issue (manifest refusals word "is required" from it); off by default: it may be a secret. */
  reportInput?: boolean;
}

export type SafeParseResult<T> = { success: true; data: T; error?: never } | { success: false; error: SchemaError; data?: never };

/** What a schema is to the kinds that hold one: its types, and `check`. */
export interface SchemaLike {
  readonly _output: unknown;
  readonly _input: unknown;
  check(input: unknown, context: Context): unknown;
}

export abstract class Schema<Out = unknown, In = Out> implements SchemaLike {
  /** Types only (no such field at run time): what parse gives and what it takes. */
  declare readonly _output: Out;
  declare readonly _input: In;

  /**
   * Checks `input`. Returns `input` itself when it fits unchanged, a new value when this schema changes it; on a
   * failure it adds issues to `context` (the caller compares their count) and what it returns means nothing.
   */
  abstract check(input: unknown, context: Context): unknown;

  parse(input: unknown, options?: ParseOptions): Out {
    const context = takeContext(options);
    const output = this.check(input, context);
    const issues = context.issues;
    if (issues.length > 0) {
      context.issues = [];
      spare = context;
      throw new SchemaError(finish(issues));
    }
    spare = context;
    return output as Out;
  }

  safeParse(input: unknown, options?: ParseOptions): SafeParseResult<Out> {
    const context = takeContext(options);
    const output = this.check(input, context);
    const issues = context.issues;
    if (issues.length > 0) context.issues = [];
    spare = context;
    return issues.length > 0 ? { success: false, error: new SchemaError(finish(issues)) } : { success: true, data: output as Out };
  }

  optional(): OptionalSchema<this> {
    return new OptionalSchema(this);
  }

  nullable(): NullableSchema<this> {
    return new NullableSchema(this);
  }

  /** `value` where the input is undefined (not checked, as zod does not; an object or a list is copied each time). */
  default(value: Exclude<Out, undefined>): DefaultSchema<this> {
    return new DefaultSchema(this, value);
  }

  /** The checked value turned into another; `context.addIssue` refuses it instead (return `NEVER` then). */
  transform<T>(convert: (value: Out, context: RefinementContext) => T): TransformSchema<this, T> {
    return new TransformSchema(this, convert);
  }

  /** A custom issue ("Invalid input", or `message`) where `test` says no; runs only on a value that passed this schema. */
  refine(test: (value: Out) => unknown, message?: Message): RefineSchema<this> {
    return new RefineSchema(this, test, messageOf(message));
  }

  /** Describes this schema for `--help` and the docs (read back with `metaOf`). */
  meta(meta: Record<string, unknown>): this {
    registry.set(this, { ...registry.get(this), ...meta });
    return this;
  }
}

/**
 * One context kept between parses: an agent parses each of 20,000 catalog objects on its own, and a context
 * each was a tenth of the time (an object and a list for the young generation). A parse inside a parse (a
 * transform that parses) finds none spare and makes its own.
 */
let spare: Context | undefined;

function takeContext(options: ParseOptions | undefined): Context {
  const context = spare ?? newContext(false);
  spare = undefined;
  context.reportInput = options?.reportInput ?? false;
  return context;
}

/** What a schema's output and input are: `Output<typeof serviceSchema>` is a Service. */
export type Output<S extends SchemaLike> = S["_output"];
export type Input<S extends SchemaLike> = S["_input"];

/** Metadata given to schemas with `meta()`; a WeakMap, so a schema dropped is forgotten. */
const registry = new WeakMap<SchemaLike, Record<string, unknown>>();

export function metaOf(schema: SchemaLike): Record<string, unknown> | undefined {
  return registry.get(schema);
}

/** What a transform's `convert` may do besides returning: refuse the value with its own message. */
export interface RefinementContext {
  addIssue(issue: { code: "custom"; message: string }): void;
}

/** Returned by a transform that refused its value: never used as a value. */
export const NEVER = Object.freeze({ status: "aborted" }) as never;

/** Lets one value (undefined or null) through as it is and checks any other with the schema it wraps. */
abstract class LetThrough<S extends SchemaLike, Out, In> extends Schema<Out, In> {
  readonly inner: S;
  readonly #checkInner: (input: unknown, context: Context) => unknown;
  readonly #through: undefined | null;
  constructor(inner: S, through: undefined | null) {
    super();
    this.inner = inner;
    this.#checkInner = inner.check.bind(inner);
    this.#through = through;
  }
  check(input: unknown, context: Context): unknown {
    return input === this.#through ? input : this.#checkInner(input, context);
  }
}

export class OptionalSchema<S extends SchemaLike> extends LetThrough<S, Output<S> | undefined, Input<S> | undefined> {
  constructor(inner: S) {
    super(inner, undefined);
  }
}

export class NullableSchema<S extends SchemaLike> extends LetThrough<S, Output<S> | null, Input<S> | null> {
  constructor(inner: S) {
    super(inner, null);
  }
}

export class DefaultSchema<S extends SchemaLike> extends Schema<Exclude<Output<S>, undefined>, Input<S> | undefined> {
  readonly inner: S;
  readonly defaultValue: Exclude<Output<S>, undefined>;
  constructor(inner: S, defaultValue: Exclude<Output<S>, undefined>) {
    super();
    this.inner = inner;
    this.defaultValue = defaultValue;
  }
  check(input: unknown, context: Context): unknown {
    if (input !== undefined) return this.inner.check(input, context);
    const value: unknown = this.defaultValue;
    // A copy each time: a caller that changes what it got must not change the next one's default.
    if (Array.isArray(value)) return [...value];
    if (typeof value === "object" && value !== null) return { ...value };
    return value;
  }
}

export class TransformSchema<S extends SchemaLike, T> extends Schema<T, Input<S>> {
  readonly inner: S;
  // Stored as taking unknown: a field whose parameter is the schema's type would make every schema invariant in it.
  readonly #convert: (value: unknown, context: RefinementContext) => T;
  constructor(inner: S, convert: (value: Output<S>, context: RefinementContext) => T) {
    super();
    this.inner = inner;
    this.#convert = convert as (value: unknown, context: RefinementContext) => T;
  }
  check(input: unknown, context: Context): unknown {
    const before = context.issues.length;
    const value = this.inner.check(input, context);
    if (context.issues.length !== before) return value;
    return this.#convert(value, { addIssue: (issue) => addIssue(context, issue, value) });
  }
}

export class RefineSchema<S extends SchemaLike> extends Schema<Output<S>, Input<S>> {
  readonly inner: S;
  readonly #test: (value: unknown) => unknown;
  readonly message: string | undefined;
  constructor(inner: S, test: (value: Output<S>) => unknown, message: string | undefined) {
    super();
    this.inner = inner;
    this.#test = test as (value: unknown) => unknown;
    this.message = message;
  }
  check(input: unknown, context: Context): unknown {
    const before = context.issues.length;
    const value = this.inner.check(input, context);
    if (context.issues.length === before && !this.#test(value)) addIssue(context, { code: "custom", message: this.message }, value);
    return value;
  }
}

export type { Issue };
