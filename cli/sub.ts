/** `leafmesh sub`: tail mesh events, as `nats sub 'mesh.>'` would. */
import { commandSummaries } from "./command-list.ts";
import { connectClient } from "./client-connect.ts";
import { defineCommand } from "./command.ts";
import { option } from "./options.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { clientSecurityOptions } from "./security-options.ts";

/**
 * A subject to subscribe to, as NATS reads one: tokens between dots, none empty and none with white space, '*' and
 * '>' only as whole tokens, '>' only last. The server takes a bad one without a word and delivers nothing.
 */
function checkSubjectPattern(subject: string): void {
  const tokens = subject.split(".");
  const bad = tokens.findIndex((token, index) => token === "" || /\s/.test(token) || (token.length > 1 && /[*>]/.test(token)) || (token === ">" && index !== tokens.length - 1));
  if (bad >= 0) throw new LeafmeshError("CONFIG_INVALID", `'${subject}' is not a NATS subject: token ${bad + 1} ('${tokens[bad]}') ${tokens[bad] === "" ? "is empty" : /\s/.test(tokens[bad]) ? "holds white space" : tokens[bad] === ">" ? "'>' may only be the last token" : "mixes '*' or '>' with other characters"}; for example 'mesh.*.tunnel.path' or 'mesh.edge-a.>'`);
}

/** Output waiting for a slow reader, past which lines are dropped (counted). */
const maxWaitingOutput = 8 * 1024 * 1024;

export const subCommand = defineCommand({
  name: "sub",
  summary: commandSummaries.sub,
  usage: "leafmesh sub [options] [SUBJECT]",
  description: `
Prints every message on SUBJECT (default "mesh.>"), one line each:
the time received, the subject and the JSON payload. Subjects are
mesh.<node>.<actor>.<event>; for example 'mesh.*.tunnel.path' or 'mesh.edge-a.>'.`,
  positionals: 1,
  options: {
    ...clientSecurityOptions,
    nats: option.natsUrl({ default: "nats://127.0.0.1:4222", description: "client URL of a hub's or node's NATS server" }),
    count: option.integer({ value: "N", description: "exit after N messages" }),
  },
  async run(options, positionals, io) {
    const subject = positionals[0] ?? "mesh.>";
    checkSubjectPattern(subject);
    const connection = await connectClient(options, { command: "sub", stderr: io.stderr, keepReconnecting: true });
    const limit = options.count ?? Infinity;
    io.stderr.write(`listening on ${subject} at ${options.nats} (Ctrl-C to stop)\n`);
    const subscription = connection.subscribe(subject, limit !== Infinity ? { max: limit } : {});
    io.signal.addEventListener("abort", () => subscription.unsubscribe(), { once: true });
    const decoder = new TextDecoder();
    const stdout = io.stdout as NodeJS.WritableStream & { writableLength?: number };
    let dropped = 0;
    for await (const message of subscription) {
      // A reader that stops reading (sub | less, paused) must not grow this process without bound: past a few MiB
      // waiting for it, lines are dropped and counted, and the count is said once it reads again.
      if ((stdout.writableLength ?? 0) > maxWaitingOutput) {
        dropped++;
        continue;
      }
      if (dropped > 0) {
        stdout.write(`${new Date().toISOString()} (${dropped} messages dropped here: the output did not keep up)\n`);
        dropped = 0;
      }
      stdout.write(`${new Date().toISOString()} ${message.subject} ${decoder.decode(message.data)}\n`);
    }
    await connection.close();
    return 0;
  },
});
