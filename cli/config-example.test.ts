/**
 * The key `--help` shows as the example of a `--config` file is one the command takes: the agent's help
 * showed `leaf-listen: 0.0.0.0:7422`, which the agent refuses ("not an option of this command").
 */
import { describe, expect, it } from "vitest";
import { agentCommand } from "./agent.ts";
import { hubCommand } from "./hub.ts";
import { siteCommand } from "./site.ts";

describe("the --config example in --help", () => {
  it.each([
    ["hub", hubCommand],
    ["site", siteCommand],
    ["agent", agentCommand],
  ])("names a key that %s takes", (_name, command) => {
    const line = command.help().split("\n").find((text) => text.trimStart().startsWith("--config FILE"));
    const key = /\(e\.g\. ([a-z-]+): /.exec(line ?? "")?.[1];
    expect(key).toBeDefined();
    expect(command.optionTable().map((row) => row.flag.split(" ")[0])).toContain(`--${key}`);
  });
});
