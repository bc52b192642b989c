/**
 * What a failed check reports: the issues (a code, the path of the field, a message, and what the code needs
 * to say more), the error that carries them, and the state one parse shares between the schemas it runs.
 *
 * The default messages are zod 4's English ones, word for word: they reach users where a call site passes
 * them on (a DNS option, a keys directory's state file, a refused enrolment), and the project's wording
 * (services/controller/normalize-fields.ts) is keyed to these codes as zod named them.
 *
 * Paths are built on the way out: a schema that fails makes an issue with an empty path, and each object or
 * list it sits in adds its key as the failure passes back through it. A value that fits costs no path at all.
 * The keys are pushed innermost first and put in order once, when the parse ends (`finish`).
 */

/** A field name or a list index. */
export type PathKey = string | number;

interface IssueBase {
  /** "spec", "ports", 0, "port" for spec.ports[0].port; empty for the value as a whole. */
  path: PathKey[];
  message: string;
  /** The value that failed; only when the parse asked for it (`reportInput`): it may hold a secret. */
  input?: unknown;
}

export type Issue = IssueBase &
  (
    | { code: "invalid_type"; expected: string }
    | { code: "invalid_value"; values: readonly unknown[] }
    | { code: "too_small"; origin: string; minimum: number; inclusive: boolean }
    | { code: "too_big"; origin: string; maximum: number; inclusive: boolean; note?: string }
    | { code: "invalid_format"; format: "regex" | "starts_with" | "includes"; pattern?: string; prefix?: string; includes?: string }
    | { code: "unrecognized_keys"; keys: string[] }
    | { code: "invalid_union"; errors: Issue[][]; note?: string; discriminator?: string; options?: unknown[] }
    | { code: "custom" }
  );

export type IssueCode = Issue["code"];

/** An issue as a schema makes it: no path yet, no message when the default one fits. */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
export type NewIssue = DistributiveOmit<Issue, "path" | "message" | "input"> & { message?: string };

/** A custom message where a schema is made: `"is required"` or `{ message }` (zod's `{ error }` too). */
export type Message = string | { message?: string; error?: string };

export function messageOf(message: Message | undefined): string | undefined {
  return typeof message === "string" ? message : (message?.message ?? message?.error);
}

/** What one parse shares: the issues so far, and whether they carry the values that failed. */
export interface Context {
  issues: Issue[];
  reportInput: boolean;
}

export function newContext(reportInput: boolean): Context {
  return { issues: [], reportInput };
}

export function addIssue(context: Context, issue: NewIssue, input: unknown, path: PathKey[] = []): void {
  const made = { ...issue, path, message: issue.message ?? defaultMessage(issue, input) } as Issue;
  if (context.reportInput && input !== undefined) made.input = input;
  context.issues.push(made);
}

/** Adds `key` to the paths of the issues from `from` on: they happened inside the field or item `key`. */
export function under(context: Context, from: number, key: PathKey): void {
  const issues = context.issues;
  for (let index = from; index < issues.length; index++) issues[index].path.push(key);
}

/** Puts the paths in order (they were built innermost first). */
export function finish(issues: Issue[]): Issue[] {
  for (const issue of issues) {
    issue.path.reverse();
    if (issue.code === "invalid_union") for (const option of issue.errors) finish(option);
  }
  return issues;
}

/** A parse that failed: every issue found, and a message that names each field (never the values). */
export class SchemaError extends Error {
  readonly issues: Issue[];

  constructor(issues: Issue[]) {
    super(issues.map((issue) => `${issue.path.length > 0 ? pathText(issue.path) : "(the value)"}: ${issue.message}`).join("; "));
    this.name = "SchemaError";
    this.issues = issues;
  }
}

/** "spec.ports[0].port" */
export function pathText(path: readonly PathKey[]): string {
  let text = "";
  for (const part of path) text += typeof part === "number" ? `[${part}]` : text ? `.${part}` : part;
  return text;
}

/** zod's name for the type of a value in its messages. */
function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isNaN(value) ? "NaN" : Number.isFinite(value) ? "number" : String(value);
  return typeof value;
}

const quote = (value: unknown) => (typeof value === "string" ? JSON.stringify(value) : typeof value === "bigint" ? `${value}n` : String(value));
const units: Record<string, string> = { string: "characters", array: "items" };

function defaultMessage(issue: NewIssue, input: unknown): string {
  switch (issue.code) {
    case "invalid_type":
      return `Invalid input: expected ${issue.expected}, received ${typeName(input)}`;
    case "invalid_value":
      return issue.values.length === 1 ? `Invalid input: expected ${quote(issue.values[0])}` : `Invalid option: expected one of ${issue.values.map(quote).join("|")}`;
    case "too_small": {
      const bound = `${issue.inclusive ? ">=" : ">"}${issue.minimum}`;
      return units[issue.origin] ? `Too small: expected ${issue.origin} to have ${bound} ${units[issue.origin]}` : `Too small: expected ${issue.origin} to be ${bound}`;
    }
    case "too_big": {
      const bound = `${issue.inclusive ? "<=" : "<"}${issue.maximum}`;
      return units[issue.origin] ? `Too big: expected ${issue.origin} to have ${bound} ${units[issue.origin]}` : `Too big: expected ${issue.origin} to be ${bound}`;
    }
    case "invalid_format":
      if (issue.format === "starts_with") return `Invalid string: must start with "${issue.prefix}"`;
      if (issue.format === "includes") return `Invalid string: must include "${issue.includes}"`;
      return `Invalid string: must match pattern ${issue.pattern}`;
    case "unrecognized_keys":
      return `Unrecognized key${issue.keys.length > 1 ? "s" : ""}: ${issue.keys.map(quote).join(", ")}`;
    case "invalid_union":
      return issue.options ? `Invalid discriminator value. Expected ${issue.options.map((option) => `'${String(option)}'`).join(" | ")}` : "Invalid input";
    case "custom":
      return "Invalid input";
  }
}
