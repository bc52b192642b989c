/** `leafmesh keys`: the mesh's root of trust and per-node credentials (trust/cli.ts). */
import type { Command } from "./command.ts";
import { runKeysCommand } from "../trust/cli.ts";

export const keysCommand: Command = {
  name: "keys",
  summary: "create the mesh's keys (NATS operator and accounts, TLS CA, pre-shared key) and issue, list and revoke node credentials",
  help: () => "Usage: leafmesh keys <init|issue|list|revoke> [options]\nRun 'leafmesh keys --help' for the commands.\n",
  main: (argv, io) => runKeysCommand(argv, io, io.env),
};
