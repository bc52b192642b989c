/**
 * How often a node's mirrors (the catalog, the revocation list) are compared with their upstream's
 * streams (bus/mirror-lineage.ts). Apart from that module, which loads nats.js's JetStream client, so
 * that the agent's flags (cli/agent.ts) read the default before the node's nats-server is spawned.
 */

/**
 * @default 30_000 — a hub that lost its store, or restored it from a backup, is found within this
 * long (and at each leaf link up for the catalog); a check costs one stream info on each side.
 */
export const lineageCheckMs = 30_000;
