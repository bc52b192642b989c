/**
 * A small command framework for the leafmesh CLI: each command declares its
 * options once (name, type, default, description); parsing, environment
 * variables (`LEAFMESH_<OPTION>`), validation messages and `--help` all come from
 * that one declaration, so the help text cannot drift from what is accepted.
 *
 * ```ts
 * const command = defineCommand({ name: "sub", summary: "...", options: { nats: { type: "string", default: "nats://127.0.0.1:4222", description: "..." } }, run });
 * ```
 */
import { parseArgs } from "node:util";
import { LeafmeshError } from "../lib/errors.ts";

export interface OptionSpec {
  type: "string" | "boolean";
  description: string;
  /** Shown in --help and used when neither the flag nor its variable is set. */
  default?: string | boolean;
  required?: boolean;
  /** Value placeholder in --help, e.g. "H:P" or "DIR". */
  value?: string;
  short?: string;
}

export interface CommandIO {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
  /** Aborted on SIGINT/SIGTERM: long-running commands stop cleanly. */
  signal: AbortSignal;
}

export interface CommandSpec<O extends Record<string, OptionSpec>> {
  name: string;
  summary: string;
  usage?: string;
  description?: string;
  options: O;
  /** Positional arguments allowed (named in usage). @default 0 */
  positionals?: number;
  run(values: OptionValues<O>, positionals: string[], io: CommandIO): Promise<number>;
}

export type OptionValues<O extends Record<string, OptionSpec>> = {
  [K in keyof O]: O[K]["type"] extends "boolean" ? boolean : O[K]["required"] extends true ? string : O[K]["default"] extends string ? string : string | undefined;
};

export interface Command {
  name: string;
  summary: string;
  help(): string;
  main(argv: string[], io: CommandIO): Promise<number>;
}

const kebab = (name: string) => name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`);
const envName = (name: string) => `LEAFMESH_${kebab(name).replaceAll("-", "_").toUpperCase()}`;

export function defineCommand<O extends Record<string, OptionSpec>>(spec: CommandSpec<O>): Command {
  const help = () => {
    const lines = [`leafmesh ${spec.name} — ${spec.summary}`, "", `Usage: ${spec.usage ?? `leafmesh ${spec.name} [options]`}`, ""];
    if (spec.description) lines.push(spec.description.trim(), "");
    lines.push("Options:");
    const rows = Object.entries(spec.options).map(([name, option]) => {
      const flag = `${option.short ? `-${option.short}, ` : ""}--${kebab(name)}${option.type === "string" ? ` ${option.value ?? "VALUE"}` : ""}`;
      const notes = [option.required ? "required" : undefined, option.default !== undefined && option.default !== false ? `default: ${String(option.default)}` : undefined, `env ${envName(name)}`]
        .filter(Boolean)
        .join("; ");
      return [flag, `${option.description} (${notes})`];
    });
    rows.push(["-h, --help", "Show this help"]);
    const width = Math.max(...rows.map(([flag]) => flag.length)) + 2;
    for (const [flag, text] of rows) lines.push(`  ${flag.padEnd(width)}${text}`);
    return `${lines.join("\n")}\n`;
  };

  return {
    name: spec.name,
    summary: spec.summary,
    help,
    async main(argv, io) {
      let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
      const parseOptions: Record<string, { type: "string" | "boolean"; short?: string }> = { help: { type: "boolean", short: "h" } };
      for (const [name, option] of Object.entries(spec.options)) parseOptions[kebab(name)] = { type: option.type, ...(option.short ? { short: option.short } : {}) };
      try {
        parsed = parseArgs({ args: argv, options: parseOptions, allowPositionals: true, strict: true });
      } catch (error) {
        io.stderr.write(`leafmesh ${spec.name}: ${(error as Error).message.replace(/\. To specify a positional.*$/s, "")}\nSee 'leafmesh ${spec.name} --help'.\n`);
        return 2;
      }
      if (parsed.values.help) {
        io.stdout.write(help());
        return 0;
      }
      if (parsed.positionals.length > (spec.positionals ?? 0)) {
        io.stderr.write(`leafmesh ${spec.name}: unexpected argument '${parsed.positionals[spec.positionals ?? 0]}'\nSee 'leafmesh ${spec.name} --help'.\n`);
        return 2;
      }
      const values: Record<string, string | boolean | undefined> = {};
      for (const [name, option] of Object.entries(spec.options)) {
        let value = parsed.values[kebab(name)];
        if (value === undefined && io.env[envName(name)] !== undefined) {
          const text = io.env[envName(name)]!;
          value = option.type === "boolean" ? /^(1|true|yes)$/i.test(text) : text;
        }
        value ??= option.default;
        if (option.required && (value === undefined || value === "")) {
          io.stderr.write(`leafmesh ${spec.name}: --${kebab(name)} is required (${option.description})\nSee 'leafmesh ${spec.name} --help'.\n`);
          return 2;
        }
        values[name] = value;
      }
      try {
        return await spec.run(values as OptionValues<O>, parsed.positionals, io);
      } catch (error) {
        if (error instanceof LeafmeshError) {
          io.stderr.write(`leafmesh ${spec.name}: ${error.message}${error.cause ? `\n  cause: ${causeText(error.cause)}` : ""}\n`);
          return error.code === "CONFIG_INVALID" ? 2 : 1;
        }
        io.stderr.write(`leafmesh ${spec.name}: unexpected error: ${(error as Error)?.stack ?? String(error)}\n`);
        return 1;
      }
    },
  };
}

function causeText(cause: unknown): string {
  const parts: string[] = [];
  let current: unknown = cause;
  for (let depth = 0; current && depth < 4; depth++) {
    parts.push(current instanceof Error ? current.message : String(current));
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(": ");
}

/** Splits "a,b, c" into trimmed non-empty parts. */
export function splitList(text: string | undefined): string[] {
  return (text ?? "")
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean);
}

export function parsePositiveInt(text: string, what: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value <= 0) throw new LeafmeshError("CONFIG_INVALID", `${what}: '${text}' is not a positive whole number`);
  return value;
}
