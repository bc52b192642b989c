/**
 * The commands of `leafmesh`, in the order --help lists them, with their
 * one-line summaries. Kept apart from the commands themselves so that the CLI
 * loads only the command it runs (cli/main.ts): an agent does not load the
 * hub's, the demo's or the keys' modules. Each command's module takes its
 * summary from here, so the two cannot drift.
 */
export const commandSummaries = {
  hub: "run a cloud hub: the NATS hub server and the catalog publisher",
  site: "run an edge site server: the site's local master, a leaf of the hubs that its agents attach to",
  agent: "run the agent of one node: its leaf NATS server and its actors",
  keys: "create the mesh's keys (NATS operator and accounts, TLS CA, pre-shared key) and issue, list and revoke node credentials",
  status: "show what one node knows: its catalog, fabric links and actors",
  netcheck: "this node's network now: its NAT (with evidence), RTT to each hub and site upstream, LAN peers by mDNS",
  drill: "cut this node's upstream for N seconds on purpose, check its services every second, restore, report",
  sub: "tail mesh events (default subject mesh.>) on any hub or node",
  demo: "run a hub and agents on this machine with sample services, and show the mesh live (no root needed)",
} as const;

export type CommandName = keyof typeof commandSummaries;

export const commandNames = Object.keys(commandSummaries) as CommandName[];
