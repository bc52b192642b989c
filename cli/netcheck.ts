/**
 * `leafmesh netcheck`: one screen of what this node's network is like now — its
 * NAT behaviour (detected again, with the evidence), the round trip to each hub
 * and site upstream its leaf may attach to, and the LAN peers mDNS shows. Asks
 * the agent behind --nats (`rpc.<node>.netcheck` and `rpc.<node>.status`).
 */
import { commandSummaries } from "./command-list.ts";
import { RpcError, rpcRequest } from "../bus/bus.ts";
import { connectClient } from "./client-connect.ts";
import { rpc } from "../bus/rpc.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { defineCommand } from "./command.ts";
import { option } from "./options.ts";
import { clientSecurityOptions } from "./security-options.ts";
import { formatNetcheck } from "./why.ts";

export const netcheckCommand = defineCommand({
  name: "netcheck",
  summary: commandSummaries.netcheck,
  description: `
Connects to the agent's NATS server (its --nats-listen) and asks the agent to
measure: the NAT type is detected again against the hub's NAT observer (the
evidence says which probe reached the node and what answered the others), each
upstream of --hub is timed by a TCP connect, and the peers mDNS announced on
the LAN are listed with whether a direct connection to them is open
(docs/why.md).`,
  options: {
    ...clientSecurityOptions,
    nats: option.natsUrl({ default: "nats://127.0.0.1:4222", description: "client URL of the agent's NATS server" }),
    json: { type: "boolean", description: "print JSON for scripts instead of the screen" },
    timeout: option.integer({ default: 20_000, value: "MS", description: "how long to wait for the measurements (NAT detection takes a few seconds)" }),
  },
  async run(options, _positionals, io) {
    const connection = await connectClient(options, { command: "netcheck", stderr: io.stderr });
    try {
      const node = connection.info?.server_name;
      if (!node) throw new LeafmeshError("NOT_RUNNING", "the NATS server did not say its name");
      const timeout = options.timeout;
      let check;
      try {
        check = await rpcRequest(connection, node, rpc.netcheck, undefined, timeout);
      } catch (cause) {
        if (cause instanceof RpcError) throw new LeafmeshError("NOT_RUNNING", `${node} could not run the check: ${cause.message}`, { cause });
        throw new LeafmeshError("NOT_RUNNING", `no tunnel answers on '${node}' (netcheck runs on an agent with the tunnel on, i.e. with --keys or --psk)`, { cause });
      }
      const status = await rpcRequest(connection, node, rpc.status, undefined, timeout).catch(() => undefined);
      io.stdout.write(options.json ? `${JSON.stringify({ ...check, links: status?.links ?? [], ...(status?.relayChoice ? { relayChoice: status.relayChoice } : {}) }, null, 2)}\n` : formatNetcheck(check, status?.links, status?.relayChoice));
      return 0;
    } finally {
      await connection.close();
    }
  },
});
