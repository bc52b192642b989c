/**
 * A small command framework for the leafmesh CLI: each command declares its
 * options once, as fields of one schema (cli/options.ts: name, meaning,
 * default, how its text becomes a value). Parsing, environment variables
 * (`LEAFMESH_<OPTION>`), a config file for the server roles (`--config FILE`,
 * one key per flag), validation messages that name the field, `--help` and
 * docs/options.md all come from that one declaration, so the help text cannot
 * drift from what is accepted. Precedence: flag, then variable, then file,
 * then the default.
 *
 * ```ts
 * const command = defineCommand({ name: "sub", summary: "...", options: { nats: option.text({ default: "nats://127.0.0.1:4222", description: "..." }) }, run });
 * ```
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { createRequire } from "node:module";
import * as z from "../lib/schema/index.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { fieldInfo, fieldOf, option, type Field, type FieldInfo, type OptionSpec } from "./options.ts";

export { splitList, parsePositiveInt, type OptionSpec } from "./options.ts";

export interface CommandIO {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
  /** Aborted on SIGINT/SIGTERM: long-running commands stop cleanly. */
  signal: AbortSignal;
}

type Options = Record<string, Field | OptionSpec>;

export interface CommandSpec<O extends Options> {
  name: string;
  summary: string;
  usage?: string;
  description?: string;
  options: O;
  /** Accept `--config FILE`: a YAML or JSON file with one key per flag (`log-level: debug`). */
  configFile?: boolean;
  /** Positional arguments allowed (named in usage). @default 0 */
  positionals?: number;
  run(values: OptionValues<O>, positionals: string[], io: CommandIO): Promise<number>;
}

type SpecValue<S extends OptionSpec> = S["type"] extends "boolean" ? boolean : S["required"] extends true ? string : S["default"] extends string ? string : string | undefined;

export type OptionValues<O extends Options> = {
  [K in keyof O]: O[K] extends z.Schema<unknown, unknown> ? z.output<O[K]> : O[K] extends OptionSpec ? SpecValue<O[K]> : never;
};

export interface Command {
  name: string;
  summary: string;
  help(): string;
  /** The command's options as the docs table shows them (flag, variable, default, meaning). */
  optionTable(): { flag: string; env: string; info: FieldInfo }[];
  main(argv: string[], io: CommandIO): Promise<number>;
}

export const kebab = (name: string) => name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`);
export const envName = (name: string) => `LEAFMESH_${kebab(name).replaceAll("-", "_").toUpperCase()}`;

const configOption = option.text({ value: "FILE", description: "read options from this YAML or JSON file, one key per flag without its dashes (e.g. log-level: debug); flags and variables win over it" });

/**
 * A value from a config file as the field's text: a list becomes "a,b" for a field that takes a comma-separated list
 * (its placeholder ends in ",…"; "a;b" for ";…"), numbers and switches stay what they say. A list where one value is expected is
 * refused: `name: [edge-c]` is not the name "edge-c".
 */
function fileValue(value: unknown, info: FieldInfo): string | boolean | undefined {
  if (value === null || value === undefined) return undefined;
  if (info.kind === "switch") {
    if (typeof value === "boolean") return value;
    throw new LeafmeshError("CONFIG_INVALID", `'${String(value)}' is not true or false`);
  }
  const separator = info.value?.endsWith(",…") ? "," : info.value?.endsWith(";…") ? ";" : undefined;
  if (Array.isArray(value) && separator && value.every((item) => typeof item === "string" || typeof item === "number")) return value.join(separator);
  if (typeof value === "string" || typeof value === "number") return String(value);
  throw new LeafmeshError("CONFIG_INVALID", `expected ${Array.isArray(value) && !separator ? "one value" : "text"}${info.value ? ` (${info.value})` : ""}, got ${Array.isArray(value) ? "a list" : typeof value}`);
}

function readConfigFile(path: string, fields: Record<string, Field>): { values: Record<string, string | boolean | undefined>; errors: string[] } {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (cause) {
    throw new LeafmeshError("CONFIG_INVALID", `--config: cannot read ${path}`, { cause });
  }
  let document: unknown;
  try {
    // Loaded only when a config file is given (yaml is ~70 modules that every process would carry otherwise).
    const { parse: parseYaml } = createRequire(import.meta.url)("yaml") as typeof import("yaml");
    document = parseYaml(text);
  } catch (cause) {
    throw new LeafmeshError("CONFIG_INVALID", `${path}: not valid YAML or JSON: ${(cause as Error).message}`, { cause });
  }
  if (document === null || document === undefined) return { values: {}, errors: [] };
  if (typeof document !== "object" || Array.isArray(document)) throw new LeafmeshError("CONFIG_INVALID", `${path}: expected a mapping of option names to values (e.g. log-level: debug)`);
  const byKey = new Map(Object.keys(fields).map((name) => [kebab(name), name]));
  const values: Record<string, string | boolean | undefined> = {};
  const errors: string[] = [];
  for (const [key, value] of Object.entries(document as Record<string, unknown>)) {
    const name = byKey.get(key);
    if (!name || name === "config") {
      errors.push(`${path}: ${key}: not an option of this command (the keys are the flags without '--': ${[...byKey.keys()].filter((known) => known !== "config").join(", ")})`);
      continue;
    }
    try {
      values[name] = fileValue(value, fieldInfo(fields[name]));
    } catch (error) {
      errors.push(`${path}: ${key}: ${(error as Error).message}`);
    }
  }
  return { values, errors };
}

export function defineCommand<O extends Options>(spec: CommandSpec<O>): Command {
  const fields: Record<string, Field> = Object.fromEntries(Object.entries(spec.options).map(([name, option]) => [name, fieldOf(option)]));
  if (spec.configFile) fields.config = configOption;
  const infos = Object.fromEntries(Object.entries(fields).map(([name, field]) => [name, fieldInfo(field)]));
  const schema = z.object(fields);

  const optionTable = () =>
    Object.entries(infos).map(([name, info]) => ({ flag: `--${kebab(name)}${info.kind === "text" ? ` ${info.value ?? "VALUE"}` : ""}`, env: envName(name), info }));

  const help = () => {
    const lines = [`leafmesh ${spec.name} — ${spec.summary}`, "", `Usage: ${spec.usage ?? `leafmesh ${spec.name} [options]`}`, ""];
    if (spec.description) lines.push(spec.description.trim(), "");
    lines.push("Options:");
    const rows = optionTable().map(({ flag, env, info }) => {
      const notes = [info.required ? "required" : undefined, info.default !== undefined ? `default: ${info.default}` : undefined, `env ${env}`].filter(Boolean).join("; ");
      return [`${info.short ? `-${info.short}, ` : ""}${flag}`, `${info.description} (${notes})`];
    });
    rows.push(["-h, --help", "Show this help"]);
    const width = Math.max(...rows.map(([flag]) => flag.length)) + 2;
    for (const [flag, text] of rows) lines.push(`  ${flag.padEnd(width)}${text}`);
    return `${lines.join("\n")}\n`;
  };

  const usageError = (io: CommandIO, message: string) => {
    io.stderr.write(`leafmesh ${spec.name}: ${message}\nSee 'leafmesh ${spec.name} --help'.\n`);
    return 2;
  };

  return {
    name: spec.name,
    summary: spec.summary,
    help,
    optionTable,
    async main(argv, io) {
      let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
      const parseOptions: Record<string, { type: "string" | "boolean"; short?: string }> = { help: { type: "boolean", short: "h" } };
      for (const [name, info] of Object.entries(infos)) parseOptions[kebab(name)] = { type: info.kind === "switch" ? "boolean" : "string", ...(info.short ? { short: info.short } : {}) };
      try {
        parsed = parseArgs({ args: argv, options: parseOptions, allowPositionals: true, strict: true });
      } catch (error) {
        return usageError(io, (error as Error).message.replace(/\. To specify a positional.*$/s, ""));
      }
      if (parsed.values.help) {
        io.stdout.write(help());
        return 0;
      }
      if (parsed.positionals.length > (spec.positionals ?? 0)) return usageError(io, `unexpected argument '${parsed.positionals[spec.positionals ?? 0]}'`);

      // Flag, then variable, then file; remember where each value came from, to say so in an error.
      const raw: Record<string, string | boolean | undefined> = {};
      const source: Record<string, string> = {};
      for (const [name, info] of Object.entries(infos)) {
        const flag = parsed.values[kebab(name)];
        const variable = io.env[envName(name)];
        if (flag !== undefined) {
          raw[name] = flag;
          source[name] = `--${kebab(name)}`;
        } else if (variable !== undefined) {
          raw[name] = info.kind === "switch" ? /^(1|true|yes)$/i.test(variable) : variable;
          source[name] = envName(name);
        }
      }
      if (typeof raw.config === "string") {
        let file: ReturnType<typeof readConfigFile>;
        try {
          file = readConfigFile(raw.config, fields);
        } catch (error) {
          return usageError(io, (error as Error).message);
        }
        if (file.errors.length > 0) return usageError(io, file.errors.join("\n  "));
        for (const [name, value] of Object.entries(file.values)) {
          if (raw[name] !== undefined || value === undefined) continue;
          raw[name] = value;
          source[name] = `${raw.config}: ${kebab(name)}`;
        }
      }
      for (const [name, info] of Object.entries(infos)) {
        if (info.required && (raw[name] === undefined || raw[name] === "")) return usageError(io, `--${kebab(name)} is required (${info.description})`);
      }
      const result = schema.safeParse(raw);
      if (!result.success) {
        const problems = result.error.issues.map((issue) => {
          const name = String(issue.path[0] ?? "");
          return `${source[name] ?? `--${kebab(name)}`}: ${issue.message}`;
        });
        return usageError(io, problems.join("\n  "));
      }
      try {
        return await spec.run(result.data as OptionValues<O>, parsed.positionals, io);
      } catch (error) {
        if (error instanceof LeafmeshError) {
          const cause = error.cause ? causeText(error.cause, error.message) : "";
          io.stderr.write(`leafmesh ${spec.name}: ${error.message}${cause ? `\n  cause: ${cause}` : ""}\n`);
          return error.code === "CONFIG_INVALID" ? 2 : 1;
        }
        io.stderr.write(`leafmesh ${spec.name}: unexpected error: ${(error as Error)?.stack ?? String(error)}\n`);
        return 1;
      }
    },
  };
}

/** The chain of causes, each said once: a cause whose text the message (or an outer cause) already carries is left out. */
function causeText(cause: unknown, message: string): string {
  const parts: string[] = [];
  let said = message;
  let current: unknown = cause;
  for (let depth = 0; current && depth < 4; depth++) {
    const text = current instanceof Error ? current.message : String(current);
    if (text && !said.includes(text)) {
      parts.push(text);
      said += `\n${text}`;
    }
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(": ");
}
