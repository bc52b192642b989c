/**
 * What the agent's flags read of its actors (defaults, checks of a value),
 * from the modules that define it: cli/agent.ts loads this before the node's
 * nats-server is spawned, and the actors themselves only after (agent-actors.ts).
 */
export { checkAccessLogFile, parseAccessLogTarget, type AccessLogTarget } from "../services/gateway/access-file.ts";
export { defaultTrafficLimits, defaultUdpIdleTimeoutMs } from "../services/traffic/capacity.ts";
export { defaultSocksLimits } from "../services/socks/limits.ts";
export { isLoopbackHost, loopbackClients, socksClients } from "../services/socks/clients.ts";
export { lineageCheckMs } from "../bus/lineage-check.ts";
