/**
 * The `leafmesh` command: dispatches to a subcommand; `leafmesh --help` lists them.
 */
import type { Command, CommandIO } from "./command.ts";
import { agentCommand } from "./agent.ts";
import { hubCommand } from "./hub.ts";
import { statusCommand } from "./status.ts";
import { subCommand } from "./sub.ts";
import { siteCommand } from "./site.ts";
import { demoCommand } from "./demo.ts";
import { keysCommand } from "./keys.ts";
import { netcheckCommand } from "./netcheck.ts";
import { drillCommand } from "./drill.ts";

export const commands: Command[] = [hubCommand, siteCommand, agentCommand, keysCommand, statusCommand, netcheckCommand, drillCommand, subCommand, demoCommand];

export function mainHelp(): string {
  const width = Math.max(...commands.map((command) => command.name.length)) + 2;
  return [
    "leafmesh — an edge service mesh: cluster DNS, cluster IPs and node-to-node paths on every node, over a NATS leaf-node fabric",
    "",
    "Usage: leafmesh <command> [options]",
    "",
    "Commands:",
    ...commands.map((command) => `  ${command.name.padEnd(width)}${command.summary}`),
    "",
    "Run 'leafmesh <command> --help' for a command's options.",
    "",
  ].join("\n");
}

export async function main(argv: string[], io: CommandIO): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    (name ? io.stdout : io.stderr).write(mainHelp());
    return name ? 0 : 2;
  }
  if (name === "--version") {
    io.stdout.write("leafmesh 0.1.0\n");
    return 0;
  }
  const command = commands.find((candidate) => candidate.name === name);
  if (!command) {
    io.stderr.write(`leafmesh: unknown command '${name}'\n\n${mainHelp()}`);
    return 2;
  }
  return command.main(rest, io);
}
