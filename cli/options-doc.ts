/**
 * docs/options.md, written from the commands' own schemas: every option of every
 * command with its environment variable, default and meaning, exactly as
 * `--help` says them. `npm run docs:options` rewrites the file; a test fails
 * when it is not what the code says.
 *
 * ```sh
 * node cli/options-doc.ts > docs/options.md
 * ```
 */
import type { Command } from "./command.ts";
import { keysSubcommands } from "./keys.ts";
import { loadCommands } from "./main.ts";

const cell = (text: string) => text.replaceAll("|", "\\|");

export async function renderOptionsDoc(): Promise<string> {
  const commands = await loadCommands();
  const lines = [
    "# Options of every command",
    "",
    "Written by `npm run docs:options` from the option schemas in `cli/` (the same ones `--help`",
    "prints); do not edit by hand. Every option can also be set by its environment variable and,",
    "for `hub`, `site` and `agent`, in the YAML or JSON file given with `--config`, one key per flag",
    "without its dashes (`log-level: debug`; a hub's `leaf-listen: 0.0.0.0:7422`). A flag wins over its variable, a variable over",
    "the file, the file over the default.",
    "",
  ];
  const table = (title: string, command: Command) => {
    lines.push(`## leafmesh ${title}`, "", command.summary.charAt(0).toUpperCase() + command.summary.slice(1) + ".", "");
    lines.push("| option | variable | default | meaning |", "|---|---|---|---|");
    for (const { flag, env, info } of command.optionTable()) {
      lines.push(`| \`${cell(flag)}\` | \`${env}\` | ${info.required ? "required" : info.default !== undefined ? `\`${cell(info.default)}\`` : ""} | ${cell(info.description)} |`);
    }
    lines.push("");
  };
  for (const command of commands) {
    if (command.name === "keys") for (const sub of keysSubcommands) table(sub.name, sub);
    else table(command.name, command);
  }
  return lines.join("\n");
}

if (import.meta.main) process.stdout.write(await renderOptionsDoc());
