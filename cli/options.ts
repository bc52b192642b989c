/**
 * The fields a command's configuration is made of: each one a schema (lib/schema) that
 * takes the text a flag, an environment variable or a config file gives, checks
 * it and turns it into the value the role uses (a host and port, a list, a
 * whole number), and carries what `--help` and docs/options.md say about it
 * (description, placeholder, default). A command's options are one
 * `z.object` of these (cli/command.ts): parsing, validation with the field's
 * name, `--help`, environment variables and the docs table all come from it.
 *
 * ```ts
 * const options = {
 *   listen: option.hostPort({ default: "0.0.0.0:4222", description: "NATS client address" }),
 *   leaseTtl: option.integer({ default: defaultLeaseTtlMs, min: 1, value: "MS", description: "..." }),
 *   routes: option.list({ value: "URL,…", description: "..." }),
 * };
 * ```
 */
import * as z from "../lib/schema/index.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { parseHostPort, type HostPort } from "../nats/render.ts";

/** What --help and the docs say about a field. */
export interface FieldMeta {
  description: string;
  /** Value placeholder in --help, e.g. "H:P" or "DIR". */
  value?: string;
  short?: string;
}

/** The shorthand of commands whose options are plain text and switches (status, sub, keys). */
export interface OptionSpec extends FieldMeta {
  type: "string" | "boolean";
  default?: string | boolean;
  required?: boolean;
}

export type Field = z.Schema<unknown, unknown>;

/** A field as --help, the argument parser and the docs see it. */
export interface FieldInfo extends FieldMeta {
  kind: "text" | "switch";
  /** The default as a user would write it (undefined: none). */
  default?: string;
  required: boolean;
}

interface TextOptions extends FieldMeta {
  /** Used when neither flag, variable nor file gives a value; shown in --help. */
  default?: string;
  required?: boolean;
}

/** Runs `parse` on the text; its error (a LeafmeshError's message) becomes the field's issue. Each builder below states what its options make of it. */
function parsedText<T>(options: TextOptions, parse: (text: string) => T): z.Schema<T | undefined, string | undefined> {
  const convert = (text: string, context: z.RefinementContext) => {
    try {
      return parse(text);
    } catch (error) {
      context.addIssue({ code: "custom", message: error instanceof Error ? error.message : String(error) });
      return z.NEVER;
    }
  };
  const meta = { description: options.description, value: options.value, short: options.short };
  if (options.default !== undefined) return z.string().default(options.default).transform(convert).meta(meta);
  if (options.required) return z.string().transform(convert).meta(meta);
  return z
    .string()
    .optional()
    .transform((text, context) => (text === undefined ? undefined : convert(text, context)))
    .meta(meta);
}

function requiredText(options: TextOptions) {
  return parsedText(options, (text) => {
    if (text.trim() === "") throw new LeafmeshError("CONFIG_INVALID", "must not be empty");
    return text;
  });
}

/** Splits "a,b, c" into trimmed non-empty parts. */
export function splitList(text: string | undefined): string[] {
  return (text ?? "")
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean);
}

export function parsePositiveInt(text: string, what?: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value <= 0) throw new LeafmeshError("CONFIG_INVALID", `${what ? `${what}: ` : ""}'${text}' is not a positive whole number`);
  return value;
}

export const option = {
  /** Free text (required text must not be empty). */
  text<O extends TextOptions>(options: O) {
    return (options.required ? requiredText(options) : parsedText(options, (text) => text)) as O extends { default: string } | { required: true } ? z.Schema<string, string> : z.Schema<string | undefined, string | undefined>;
  },
  /** A switch: present means on (`LEAFMESH_X=1|true|yes` in the environment). */
  flag(options: FieldMeta) {
    return z.boolean().default(false).meta({ description: options.description, short: options.short });
  },
  /**
   * host:port, or with `off`: the word "off" for none. Port 0 (a free port of the kernel's choosing) only with
   * `anyPort`: for a nats-server, 0 is not "any" (the client port falls back to 4222, monitoring turns off), and
   * elsewhere nobody would know which port answers.
   */
  hostPort<O extends TextOptions & { off?: boolean; anyPort?: boolean }>(options: O) {
    return parsedText({ value: options.off ? "H:P|off" : "H:P", ...options }, (text) => {
      if (options.off && text === "off") return undefined;
      const address = parseHostPort(text);
      if (address.port === 0 && !options.anyPort) throw new LeafmeshError("CONFIG_INVALID", `'${text}': port 0 cannot be used here (give the port to listen on: the mesh and its users must know it)`);
      return address;
    }) as O extends { off: true }
      ? z.Schema<HostPort | undefined, string | undefined>
      : O extends { default: string } | { required: true }
        ? z.Schema<HostPort, string>
        : z.Schema<HostPort | undefined, string | undefined>;
  },
  /** A NATS client URL (nats:// or tls://, or host:port as nats.js takes it), refused when it is none: a typo is said, not dialled. */
  natsUrl<O extends TextOptions>(options: O) {
    return parsedText({ value: "URL", ...options }, checkNatsUrl) as O extends { default: string } | { required: true } ? z.Schema<string, string> : z.Schema<string | undefined, string | undefined>;
  },
  /** A comma-separated list (a YAML list in a config file). */
  list<O extends TextOptions>(options: O) {
    return parsedText(options, (text) => {
      const items = splitList(text);
      if (options.required && items.length === 0) throw new LeafmeshError("CONFIG_INVALID", "needs at least one value");
      return items;
    }) as O extends { default: string } | { required: true } ? z.Schema<string[], string> : z.Schema<string[] | undefined, string | undefined>;
  },
  /** A whole number of at least `min` (default 1). */
  integer<O extends Omit<TextOptions, "default"> & { default?: number; min?: number; max?: number }>(options: O) {
    const min = options.min ?? 1;
    return parsedText({ ...options, default: options.default === undefined ? undefined : String(options.default) }, (text) => {
      const value = Number(text);
      if (!Number.isInteger(value) || value < min || (options.max !== undefined && value > options.max)) {
        throw new LeafmeshError("CONFIG_INVALID", `'${text}' is not a whole number${options.max !== undefined ? ` from ${min} to ${options.max}` : ` of at least ${min}`}`);
      }
      return value;
    }) as O extends { default: number } | { required: true } ? z.Schema<number, string> : z.Schema<number | undefined, string | undefined>;
  },
  /** One of a fixed set of words. */
  choice<const V extends readonly string[], O extends TextOptions>(values: V, options: O) {
    return parsedText({ value: values.join("|"), ...options }, (text) => {
      if (!values.includes(text)) throw new LeafmeshError("CONFIG_INVALID", `'${text}' is not one of ${values.join(", ")}`);
      return text as V[number];
    }) as O extends { default: string } | { required: true } ? z.Schema<V[number], string> : z.Schema<V[number] | undefined, string | undefined>;
  },
  /** Text turned into a value by `parse`, which throws a LeafmeshError saying what is wrong. */
  parsed<T, O extends TextOptions>(options: O, parse: (text: string) => T) {
    return parsedText(options, parse) as O extends { default: string } | { required: true } ? z.Schema<T, string> : z.Schema<T | undefined, string | undefined>;
  },
};

/** The field of a plain option spec. */
export function fieldOf(spec: Field | OptionSpec): Field {
  if (spec instanceof z.Schema) return spec;
  const meta = { description: spec.description, value: spec.value, short: spec.short };
  if (spec.type === "boolean") return option.flag(meta);
  return option.text({ ...meta, default: spec.default as string | undefined, required: spec.required });
}

/** What a field is, read from its schema: through its transform, default and optional to the text or switch it takes. */
export function fieldInfo(field: Field): FieldInfo {
  const meta = (z.metaOf(field) ?? {}) as Partial<FieldMeta>;
  let current: z.SchemaLike = field;
  let defaultValue: unknown;
  let optional = false;
  for (;;) {
    if (current instanceof z.TransformSchema) current = current.inner;
    else if (current instanceof z.DefaultSchema) {
      defaultValue = current.defaultValue;
      current = current.inner;
    } else if (current instanceof z.OptionalSchema) {
      optional = true;
      current = current.inner;
    } else break;
  }
  const kind = current instanceof z.BooleanSchema ? "switch" : "text";
  return {
    kind,
    description: meta.description ?? "",
    value: meta.value,
    short: meta.short,
    default: kind === "switch" || defaultValue === undefined ? undefined : String(defaultValue),
    required: kind === "text" && defaultValue === undefined && !optional,
  };
}

/** `text` when nats.js can dial it as a client URL; otherwise CONFIG_INVALID saying what it expects. */
export function checkNatsUrl(text: string): string {
  const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `nats://${text}`;
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (!parsed || !["nats:", "tls:"].includes(parsed.protocol) || parsed.hostname === "" || (parsed.pathname !== "" && parsed.pathname !== "/")) {
    throw new LeafmeshError("CONFIG_INVALID", `'${text}' is not a NATS client URL (nats://host:port, tls://host:port, or host:port)`);
  }
  return text;
}
