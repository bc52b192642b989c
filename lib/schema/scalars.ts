/**
 * The kinds of single values: strings and numbers with their checks, booleans, literals, enums, and unknown.
 * Each check runs in the order it was added and all of them run (a string both too short and off its pattern
 * reports both), but for `int`, which ends a number's checks as zod's does: "0.5 is not a whole number" says
 * it all.
 */
import { addIssue, messageOf, type Context, type Message, type NewIssue } from "./issues.ts";
import { Schema } from "./schema.ts";

interface StringCheck {
  test(value: string): boolean;
  issue: NewIssue;
}

export class StringSchema extends Schema<string> {
  readonly checks: readonly StringCheck[];
  readonly typeMessage: string | undefined;
  constructor(checks: readonly StringCheck[] = [], typeMessage?: string) {
    super();
    this.checks = checks;
    this.typeMessage = typeMessage;
  }

  check(input: unknown, context: Context): unknown {
    if (typeof input !== "string") {
      addIssue(context, { code: "invalid_type", expected: "string", message: this.typeMessage }, input);
      return input;
    }
    const checks = this.checks;
    for (let index = 0; index < checks.length; index++) if (!checks[index].test(input)) addIssue(context, checks[index].issue, input);
    return input;
  }

  #with(check: StringCheck): StringSchema {
    return new StringSchema([...this.checks, check], this.typeMessage);
  }
  min(length: number, message?: Message): StringSchema {
    return this.#with({ test: (value) => value.length >= length, issue: { code: "too_small", origin: "string", minimum: length, inclusive: true, message: messageOf(message) } });
  }
  max(length: number, message?: Message): StringSchema {
    return this.#with({ test: (value) => value.length <= length, issue: { code: "too_big", origin: "string", maximum: length, inclusive: true, message: messageOf(message) } });
  }
  regex(pattern: RegExp, message?: Message): StringSchema {
    const test = (value: string) => {
      pattern.lastIndex = 0; // a /g or /y pattern keeps its place between tests otherwise
      return pattern.test(value);
    };
    return this.#with({ test, issue: { code: "invalid_format", format: "regex", pattern: String(pattern), message: messageOf(message) } });
  }
  startsWith(prefix: string, message?: Message): StringSchema {
    return this.#with({ test: (value) => value.startsWith(prefix), issue: { code: "invalid_format", format: "starts_with", prefix, message: messageOf(message) } });
  }
  includes(part: string, message?: Message): StringSchema {
    return this.#with({ test: (value) => value.includes(part), issue: { code: "invalid_format", format: "includes", includes: part, message: messageOf(message) } });
  }
}

interface NumberCheck {
  test(value: number): boolean;
  issue: NewIssue;
  /** A failure ends the checks (int). */
  last?: boolean;
}

export class NumberSchema extends Schema<number> {
  readonly checks: readonly NumberCheck[];
  readonly typeMessage: string | undefined;
  /** The checks folded into bounds, to pass a number that fits without a call per check (a port has five). */
  readonly #integer: boolean;
  readonly #above: number;
  readonly #from: number;
  readonly #upTo: number;
  constructor(checks: readonly NumberCheck[] = [], typeMessage?: string, bounds = { integer: false, above: -Infinity, from: -Infinity, upTo: Infinity }) {
    super();
    this.checks = checks;
    this.typeMessage = typeMessage;
    this.#integer = bounds.integer;
    this.#above = bounds.above;
    this.#from = bounds.from;
    this.#upTo = bounds.upTo;
  }

  check(input: unknown, context: Context): unknown {
    if (typeof input === "number" && (this.#integer ? Number.isInteger(input) : Number.isFinite(input)) && input > this.#above && input >= this.#from && input <= this.#upTo) return input;
    // NaN and the infinities are not numbers a field can mean (JSON has neither).
    if (typeof input !== "number" || !Number.isFinite(input)) {
      addIssue(context, { code: "invalid_type", expected: "number", message: this.typeMessage }, input);
      return input;
    }
    for (const check of this.checks) {
      if (check.test(input)) continue;
      addIssue(context, check.issue, input);
      if (check.last) break;
    }
    return input;
  }

  #with(bound: { integer?: boolean; above?: number; from?: number; upTo?: number }, ...checks: NumberCheck[]): NumberSchema {
    const bounds = {
      integer: this.#integer || (bound.integer ?? false),
      above: Math.max(this.#above, bound.above ?? -Infinity),
      from: Math.max(this.#from, bound.from ?? -Infinity),
      upTo: Math.min(this.#upTo, bound.upTo ?? Infinity),
    };
    return new NumberSchema([...this.checks, ...checks], this.typeMessage, bounds);
  }
  /** A whole number within the safe range (2^53 - 1 either way), where every integer is exact. */
  int(message?: Message): NumberSchema {
    const text = messageOf(message);
    return this.#with(
      { integer: true, from: Number.MIN_SAFE_INTEGER, upTo: Number.MAX_SAFE_INTEGER },
      { test: Number.isInteger, issue: { code: "invalid_type", expected: "int", message: text }, last: true },
      { test: (value) => value >= Number.MIN_SAFE_INTEGER, issue: { code: "too_small", origin: "int", minimum: Number.MIN_SAFE_INTEGER, inclusive: true, message: text } },
      { test: (value) => value <= Number.MAX_SAFE_INTEGER, issue: { code: "too_big", origin: "int", maximum: Number.MAX_SAFE_INTEGER, inclusive: true, note: "Integers must be within the safe integer range.", message: text } },
    );
  }
  min(minimum: number, message?: Message): NumberSchema {
    return this.#with({ from: minimum }, { test: (value) => value >= minimum, issue: { code: "too_small", origin: "number", minimum, inclusive: true, message: messageOf(message) } });
  }
  max(maximum: number, message?: Message): NumberSchema {
    return this.#with({ upTo: maximum }, { test: (value) => value <= maximum, issue: { code: "too_big", origin: "number", maximum, inclusive: true, message: messageOf(message) } });
  }
  positive(message?: Message): NumberSchema {
    return this.#with({ above: 0 }, { test: (value) => value > 0, issue: { code: "too_small", origin: "number", minimum: 0, inclusive: false, message: messageOf(message) } });
  }
  nonnegative(message?: Message): NumberSchema {
    return this.min(0, message);
  }
}

export class BooleanSchema extends Schema<boolean> {
  check(input: unknown, context: Context): unknown {
    if (typeof input !== "boolean") addIssue(context, { code: "invalid_type", expected: "boolean" }, input);
    return input;
  }
}

/** Anything, undefined included (so a field of it may be left out). */
export class UnknownSchema extends Schema<unknown> {
  check(input: unknown): unknown {
    return input;
  }
}

export type Primitive = string | number | boolean | null;

export class LiteralSchema<V extends Primitive> extends Schema<V> {
  readonly value: V;
  readonly message: string | undefined;
  constructor(value: V, message?: string) {
    super();
    this.value = value;
    this.message = message;
  }
  check(input: unknown, context: Context): unknown {
    if (input !== this.value) addIssue(context, { code: "invalid_value", values: [this.value], message: this.message }, input);
    return input;
  }
}

export class EnumSchema<V extends string> extends Schema<V> {
  readonly options: readonly V[];
  readonly #allowed: ReadonlySet<unknown>;
  readonly message: string | undefined;
  constructor(options: readonly V[], message?: string) {
    super();
    this.options = options;
    this.#allowed = new Set(options);
    this.message = message;
  }
  check(input: unknown, context: Context): unknown {
    if (!this.#allowed.has(input)) addIssue(context, { code: "invalid_value", values: this.options, message: this.message }, input);
    return input;
  }
}
