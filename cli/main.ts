/**
 * The `leafmesh` command: dispatches to a subcommand; `leafmesh --help` lists them.
 */
import type { Command, CommandIO } from "./command.ts";
import { commandNames, commandSummaries, type CommandName } from "./command-list.ts";
import { useNativeEd25519 } from "../lib/ed25519.ts";

/** Each command's module, loaded only when that command runs (its summary for --help is in command-list.ts). */
const loaders: Record<CommandName, () => Promise<Command>> = {
  hub: async () => (await import("./hub.ts")).hubCommand,
  site: async () => (await import("./site.ts")).siteCommand,
  agent: async () => (await import("./agent.ts")).agentCommand,
  keys: async () => (await import("./keys.ts")).keysCommand,
  status: async () => (await import("./status.ts")).statusCommand,
  netcheck: async () => (await import("./netcheck.ts")).netcheckCommand,
  drill: async () => (await import("./drill.ts")).drillCommand,
  sub: async () => (await import("./sub.ts")).subCommand,
  demo: async () => (await import("./demo.ts")).demoCommand,
};

/**
 * Every command, loaded (docs/options.md, tests): in --help order. One after the other: the modules
 * import each other (demo imports hub and agent), and vitest's module runner deadlocked on the same
 * modules imported at once from several places.
 */
export async function loadCommands(): Promise<Command[]> {
  const loaded: Command[] = [];
  for (const name of commandNames) loaded.push(await loaders[name]());
  return loaded;
}

export function mainHelp(): string {
  const width = Math.max(...commandNames.map((name) => name.length)) + 2;
  return [
    "leafmesh — an edge service mesh: cluster DNS, cluster IPs and node-to-node paths on every node, over a NATS leaf-node fabric",
    "",
    "Usage: leafmesh <command> [options]",
    "",
    "Commands:",
    ...commandNames.map((name) => `  ${name.padEnd(width)}${commandSummaries[name]}`),
    "",
    "Run 'leafmesh <command> --help' for a command's options.",
    "",
  ].join("\n");
}

export async function main(argv: string[], io: CommandIO): Promise<number> {
  useNativeEd25519(); // NATS keys signed and checked by OpenSSL, not tweetnacl's JavaScript (lib/ed25519.ts)
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    (name ? io.stdout : io.stderr).write(mainHelp());
    return name ? 0 : 2;
  }
  if (name === "--version") {
    io.stdout.write("leafmesh 0.1.0\n");
    return 0;
  }
  if (!Object.hasOwn(loaders, name)) {
    io.stderr.write(`leafmesh: unknown command '${name}'\n\n${mainHelp()}`);
    return 2;
  }
  const command = await loaders[name as CommandName]();
  return command.main(rest, io);
}
