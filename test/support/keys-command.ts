/**
 * `leafmesh keys ARGS` run in the test's own process (cli/keys.ts's runKeysCommand, the command's code), for tests
 * where the command is a step, not what is tested: a CLI process costs ~0.6–1.2 s of CPU on a 2-core test machine.
 * Resolves with what it printed (stdout and stderr); a command that fails fails the test with that output.
 */
import { Writable } from "node:stream";
import { expect } from "vitest";
import { runKeysCommand } from "../../cli/keys.ts";

export async function keysInProcess(...argv: string[]): Promise<string> {
  let text = "";
  const sink = new Writable({
    write(chunk, _encoding, done) {
      text += chunk.toString();
      done();
    },
  });
  const code = await runKeysCommand(argv, { stdout: sink, stderr: sink }, {});
  expect(code, text).toBe(0);
  return text;
}
