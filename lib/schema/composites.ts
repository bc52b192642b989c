/**
 * The kinds that hold others: objects (unknown keys stripped, refused or kept), lists, tuples, records, and
 * unions (tried in order, or picked by a discriminating field). Each gives back the value it was given when
 * every part of it came back unchanged; only a change (a key stripped, a default filled, a part transformed)
 * makes a copy, of this level, with the changed parts in it.
 *
 * Input is JSON from peers and files. A `__proto__` key of JSON.parse is an own property, harmless where it
 * is, but a copy that assigned it would set the new object's prototype: it is never copied (zod drops it too),
 * and an object or record that holds one is copied without it. Nesting costs stack only as deep as the
 * schema, never as deep as the input: a value deeper than its schema fails at the schema's last level.
 */
import { addIssue, under, type Context, type Issue } from "./issues.ts";
import { OptionalSchema, Schema, type Input, type Output, type SchemaLike } from "./schema.ts";
import { LiteralSchema, EnumSchema, UnknownSchema, type StringSchema } from "./scalars.ts";

type AnySchema = SchemaLike;
type Simplify<T> = { [K in keyof T]: T[K] } & {};

export class ArraySchema<S extends AnySchema> extends Schema<Output<S>[], Input<S>[]> {
  readonly element: S;
  readonly minimum: number;
  readonly maximum: number;
  readonly messages: { min?: string; max?: string };
  readonly #checkElement: (input: unknown, context: Context) => unknown;
  constructor(element: S, minimum = 0, maximum = Infinity, messages: { min?: string; max?: string } = {}) {
    super();
    this.element = element;
    this.#checkElement = element.check.bind(element);
    this.minimum = minimum;
    this.maximum = maximum;
    this.messages = messages;
  }

  check(input: unknown, context: Context): unknown {
    if (!Array.isArray(input)) {
      addIssue(context, { code: "invalid_type", expected: "array" }, input);
      return input;
    }
    let output: unknown[] | undefined;
    const issues = context.issues;
    const checkElement = this.#checkElement;
    for (let index = 0; index < input.length; index++) {
      const item: unknown = input[index];
      const before = issues.length;
      const checked = checkElement(item, context);
      if (issues.length !== before) under(context, before, index);
      else if (checked !== item) (output ??= input.slice())[index] = checked;
    }
    if (input.length < this.minimum) addIssue(context, { code: "too_small", origin: "array", minimum: this.minimum, inclusive: true, message: this.messages.min }, input);
    if (input.length > this.maximum) addIssue(context, { code: "too_big", origin: "array", maximum: this.maximum, inclusive: true, message: this.messages.max }, input);
    return output ?? input;
  }

  min(minimum: number, message?: string): ArraySchema<S> {
    return new ArraySchema(this.element, minimum, this.maximum, { ...this.messages, min: message });
  }
  max(maximum: number, message?: string): ArraySchema<S> {
    return new ArraySchema(this.element, this.minimum, maximum, { ...this.messages, max: message });
  }
}

type TupleOutput<T extends readonly AnySchema[]> = { -readonly [I in keyof T]: Output<T[I]> };
type TupleInput<T extends readonly AnySchema[]> = { -readonly [I in keyof T]: Input<T[I]> };

export class TupleSchema<T extends readonly AnySchema[]> extends Schema<TupleOutput<T>, TupleInput<T>> {
  readonly items: T;
  constructor(items: T) {
    super();
    this.items = items;
  }
  check(input: unknown, context: Context): unknown {
    if (!Array.isArray(input)) {
      addIssue(context, { code: "invalid_type", expected: "tuple" }, input);
      return input;
    }
    const length = this.items.length;
    // As zod: a tuple too short is refused for that alone; one too long, and its items checked as well.
    if (input.length < length) {
      addIssue(context, { code: "too_small", origin: "array", minimum: length, inclusive: true }, input);
      return input;
    }
    if (input.length > length) addIssue(context, { code: "too_big", origin: "array", maximum: length, inclusive: true }, input);
    let output: unknown[] | undefined;
    for (let index = 0; index < length; index++) {
      const before = context.issues.length;
      const checked = this.items[index].check(input[index], context);
      if (context.issues.length !== before) under(context, before, index);
      else if (checked !== input[index]) (output ??= input.slice())[index] = checked;
    }
    return output ?? input;
  }
}

const isPlainObject = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);

export class RecordSchema<K extends StringSchema, V extends AnySchema> extends Schema<Record<Output<K>, Output<V>>, Record<Input<K>, Input<V>>> {
  readonly keys: K;
  readonly values: V;
  constructor(keys: K, values: V) {
    super();
    this.keys = keys;
    this.values = values;
  }
  check(input: unknown, context: Context): unknown {
    if (!isPlainObject(input)) {
      addIssue(context, { code: "invalid_type", expected: "record" }, input);
      return input;
    }
    const checkKeys = this.keys.checks.length > 0;
    let changed: Map<string, unknown> | undefined;
    for (const key in input) {
      if (key === "__proto__") {
        (changed ??= new Map()).set(key, dropped);
        continue;
      }
      const value = input[key];
      const before = context.issues.length;
      if (checkKeys) this.keys.check(key, context);
      const checked = this.values.check(value, context);
      if (context.issues.length !== before) under(context, before, key);
      else if (checked !== value) (changed ??= new Map()).set(key, checked);
    }
    if (!changed) return input;
    const output: Record<string, unknown> = {};
    for (const key in input) {
      const value = changed.has(key) ? changed.get(key) : input[key];
      if (value !== dropped) output[key] = value;
    }
    return output;
  }
}

const dropped = Symbol("dropped");

export type Shape = Record<string, AnySchema>;
type OptionalKeys<S extends Shape, Side extends "_output" | "_input"> = { [K in keyof S]: undefined extends S[K][Side] ? K : never }[keyof S];
type ObjectSide<S extends Shape, Side extends "_output" | "_input"> = Simplify<
  { [K in Exclude<keyof S, OptionalKeys<S, Side>>]: S[K][Side] } & { [K in OptionalKeys<S, Side>]?: S[K][Side] }
>;
export type ObjectOutput<S extends Shape> = ObjectSide<S, "_output">;
export type ObjectInput<S extends Shape> = ObjectSide<S, "_input">;

/** What an object does with keys its shape does not name: drop them (zod's default), refuse them, or keep them. */
export type UnknownKeys = "strip" | "strict" | "passthrough";

export class ObjectSchema<S extends Shape> extends Schema<ObjectOutput<S>, ObjectInput<S>> {
  readonly shape: S;
  readonly unknownKeys: UnknownKeys;
  readonly #keys: string[];
  readonly #fields: AnySchema[];
  readonly #known: ReadonlySet<string>;
  /** Field index by name, and whether a field must be there (neither optional nor unknown: required, or defaulted). */
  readonly #index: ReadonlyMap<string, number>;
  /** Each field's check, bound: one call site over many kinds of schema costs less calling functions than methods. */
  readonly #checks: ((input: unknown, context: Context) => unknown)[];
  readonly #needed: boolean[];
  readonly #neededCount: number;
  /**
   * The keys of the last object that fitted, in its order, and their fields: objects of one kind from one
   * writer (JSON.parse of the same encoder) come with the same keys in the same order, so a key is found by
   * comparing it with the one at its place last time (a pointer comparison, as V8 keeps a JSON object's keys
   * unique) instead of a lookup by name, which was a third of the check's time.
   */
  readonly #lastKeys: string[] = [];
  readonly #lastFields: number[] = [];
  constructor(shape: S, unknownKeys: UnknownKeys = "strip") {
    super();
    if (Object.hasOwn(shape, "__proto__")) throw new TypeError("an object schema cannot have a field named __proto__");
    this.shape = shape;
    this.unknownKeys = unknownKeys;
    this.#keys = Object.keys(shape);
    this.#fields = Object.values(shape);
    this.#known = new Set(this.#keys);
    this.#index = new Map(this.#keys.map((key, index) => [key, index]));
    this.#checks = this.#fields.map((field) => field.check.bind(field));
    this.#needed = this.#fields.map((field) => !(field instanceof OptionalSchema || field instanceof UnknownSchema));
    this.#neededCount = this.#needed.filter(Boolean).length;
  }

  /**
   * Most objects fit as they are: every key known, every value unchanged, every needed field there. That is
   * checked first, walking the input's own keys (V8 reads a value in a for-in of its keys without a lookup
   * by name). At the first key, value or gap that does not fit, the object is checked again field by field in
   * the shape's order (`#byShape`), which copies what changes and reports every issue in zod's order.
   */
  check(input: unknown, context: Context): unknown {
    if (!isPlainObject(input)) {
      addIssue(context, { code: "invalid_type", expected: "object" }, input);
      return input;
    }
    const issues = context.issues;
    const start = issues.length;
    const checks = this.#checks;
    const needed = this.#needed;
    const lastKeys = this.#lastKeys;
    const lastFields = this.#lastFields;
    let neededFound = 0;
    let position = 0;
    let asLastTime = true;
    for (const key in input) {
      let index: number | undefined;
      if (asLastTime && lastKeys[position] === key) index = lastFields[position];
      else {
        asLastTime = false;
        index = this.#index.get(key);
        if (index === undefined) return this.#byShape(input, context);
      }
      position++;
      const value = input[key];
      if (checks[index](value, context) !== value || issues.length !== start) {
        issues.length = start;
        return this.#byShape(input, context);
      }
      if (needed[index]) neededFound++;
    }
    if (neededFound !== this.#neededCount) return this.#byShape(input, context);
    if (!asLastTime || position !== lastKeys.length) this.#remember(input);
    return input;
  }

  #remember(input: Record<string, unknown>): void {
    this.#lastKeys.length = 0;
    this.#lastFields.length = 0;
    for (const key in input) {
      this.#lastKeys.push(key);
      this.#lastFields.push(this.#index.get(key)!);
    }
  }

  #byShape(input: Record<string, unknown>, context: Context): unknown {
    const keys = this.#keys;
    const fields = this.#fields;
    const issues = context.issues;
    const start = issues.length;
    // Which keys are there: counting the input's keys against the fields found with a value is enough to know
    // that no other key is there, without looking each one up.
    let found = 0;
    let output: Record<string, unknown> | undefined;
    for (let index = 0; index < keys.length; index++) {
      const key = keys[index];
      const value = input[key];
      if (value !== undefined) found++;
      const before = issues.length;
      const checked = fields[index].check(value, context);
      if (issues.length !== before) under(context, before, key);
      else if (checked !== value || output) {
        if (!output) output = this.#copyBefore(input, index);
        if (checked !== undefined || key in input) output[key] = checked;
      }
    }
    let count = 0;
    for (const _ in input) count++;
    if (count !== found) output = this.#unknownKeys(input, context, output);
    return issues.length !== start ? input : (output ?? input);
  }

  /** A new object with the fields before `index` as they were (a copy is made once, at the first change). */
  #copyBefore(input: Record<string, unknown>, index: number): Record<string, unknown> {
    const output: Record<string, unknown> = {};
    for (let earlier = 0; earlier < index; earlier++) {
      const key = this.#keys[earlier];
      if (key in input) output[key] = input[key];
    }
    return output;
  }

  /** Keys beyond the shape (or a named field there but undefined): stripped, refused or kept, by the object's rule. */
  #unknownKeys(input: Record<string, unknown>, context: Context, output: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
    const unknown: string[] = [];
    for (const key in input) if (!this.#known.has(key)) unknown.push(key);
    if (unknown.length === 0) return output;
    if (this.unknownKeys === "strict") {
      addIssue(context, { code: "unrecognized_keys", keys: unknown }, input);
      return output;
    }
    if (this.unknownKeys === "strip") return output ?? this.#copyBefore(input, this.#keys.length);
    if (!unknown.includes("__proto__")) return output;
    // Passthrough keeps the other keys; the copy is only to leave `__proto__` out.
    const kept = output ?? this.#copyBefore(input, this.#keys.length);
    for (const key of unknown) if (key !== "__proto__") kept[key] = input[key];
    return kept;
  }

  strict(): ObjectSchema<S> {
    return new ObjectSchema(this.shape, "strict");
  }
  passthrough(): ObjectSchema<S> {
    return new ObjectSchema(this.shape, "passthrough");
  }
  partial(): ObjectSchema<{ [K in keyof S]: OptionalSchema<S[K]> }> {
    const shape = Object.fromEntries(Object.entries(this.shape).map(([key, field]) => [key, new OptionalSchema(field)]));
    return new ObjectSchema(shape as unknown as { [K in keyof S]: OptionalSchema<S[K]> }, this.unknownKeys);
  }
}

/** Options tried in order; the first that fits gives the value. */
export class UnionSchema<O extends readonly AnySchema[]> extends Schema<Output<O[number]>, Input<O[number]>> {
  readonly options: O;
  constructor(options: O) {
    super();
    this.options = options;
  }
  check(input: unknown, context: Context): unknown {
    const failures: Issue[][] = [];
    for (const option of this.options) {
      const own: Context = { issues: [], reportInput: context.reportInput };
      const checked = option.check(input, own);
      if (own.issues.length === 0) return checked;
      failures.push(own.issues);
    }
    // As zod: where exactly one option got past its type (its issues are its checks'), that option's issues say
    // more than "Invalid input" ("must be 1 to 65535" for a port that is a number, of a number-or-name).
    const typed = failures.filter((issues) => issues.every((issue) => continuable.has(issue.code) && !(issue.code === "too_big" && issue.origin === "int")));
    if (typed.length === 1) context.issues.push(...typed[0]);
    else addIssue(context, { code: "invalid_union", errors: failures }, input);
    return input;
  }
}
const continuable = new Set(["too_small", "too_big", "invalid_format", "custom"]);

/** Objects told apart by one field's literal value (`kind`): the option for the value is the only one tried. */
export class DiscriminatedUnionSchema<D extends string, O extends readonly ObjectSchema<Shape>[]> extends Schema<Output<O[number]>, Input<O[number]>> {
  readonly discriminator: D;
  readonly options: O;
  /** The check of the option for each value of the discriminator. */
  readonly #byValue = new Map<unknown, (input: unknown, context: Context) => unknown>();
  constructor(discriminator: D, options: O) {
    super();
    this.discriminator = discriminator;
    this.options = options;
    for (const option of options) {
      const field: AnySchema | undefined = option.shape[discriminator];
      const values = field instanceof LiteralSchema ? [field.value] : field instanceof EnumSchema ? field.options : [];
      for (const value of values) {
        if (this.#byValue.has(value)) throw new TypeError(`two options of the union have ${discriminator} ${String(value)}`);
        this.#byValue.set(value, option.check.bind(option));
      }
    }
  }
  check(input: unknown, context: Context): unknown {
    if (!isPlainObject(input)) {
      addIssue(context, { code: "invalid_type", expected: "object" }, input);
      return input;
    }
    const checkOption = this.#byValue.get(input[this.discriminator]);
    if (checkOption) return checkOption(input, context);
    const options = [...this.#byValue.keys()];
    addIssue(context, { code: "invalid_union", errors: [], note: "No matching discriminator", discriminator: this.discriminator, options }, input, [this.discriminator]);
    return input;
  }
}
