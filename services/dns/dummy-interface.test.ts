/**
 * The link-local DNS address, made inside a throwaway network namespace
 * (`lmdns-<pid>`): on a dummy interface where the kernel has the dummy driver,
 * on lo where it has not; reachable from the namespace, idempotent, and removed
 * only by the call that made it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCommand } from "../../lib/command.ts";
import { ensureDummyInterface } from "./dummy-interface.ts";
import { requireTools } from "../../test/support/dns-servers.ts";

const namespace = `lmdns-${process.pid}`;

async function ip(args: string[]): Promise<string> {
  const result = await runCommand(["ip", ...args]);
  if (result.code !== 0) throw new Error(`ip ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

describe("link-local DNS address", () => {
  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error("this test needs root (it creates a network namespace and an interface address); CI runs as root");
    requireTools(["ip", "ping"]);
    // leftovers of a crashed run of this prefix
    for (const line of (await ip(["netns", "list"])).split("\n")) {
      const name = line.split(" ")[0];
      if (name.startsWith("lmdns-")) await runCommand(["ip", "netns", "del", name]);
    }
    await ip(["netns", "add", namespace]);
    await ip(["-n", namespace, "link", "set", "lo", "up"]);
  });
  afterAll(async () => {
    await runCommand(["ip", "netns", "del", namespace]);
  });

  it("puts 169.254.96.16/32 on an interface that is up, reuses it, and removes only what it made", async () => {
    const dummySupported = (await runCommand(["ip", "-n", namespace, "link", "add", "lmdns-probe", "type", "dummy"])).code === 0;
    if (dummySupported) await ip(["-n", namespace, "link", "del", "lmdns-probe"]);
    const first = await ensureDummyInterface({ namespace });
    expect(first.created).toBe(true);
    expect(first.name).toBe(dummySupported ? "leafmesh-dns" : "lo");
    const shown = await ip(["-n", namespace, "-o", "addr", "show", "dev", first.name]);
    expect(shown).toMatch(/inet 169\.254\.96\.16\/32/);
    expect(await ip(["-n", namespace, "link", "show", "dev", first.name])).toMatch(/<[^>]*UP[^>]*>/);
    expect((await runCommand(["ip", "netns", "exec", namespace, "ping", "-c1", "-W1", "169.254.96.16"])).code).toBe(0);
    const second = await ensureDummyInterface({ namespace });
    expect(second.created).toBe(false);
    await second.remove(); // not its own: stays
    expect(await ip(["-n", namespace, "-o", "addr", "show", "dev", first.name])).toMatch(/169\.254\.96\.16\/32/);
    await first.remove();
    expect(await ip(["-n", namespace, "-o", "addr", "show"])).not.toMatch(/169\.254\.96\.16/);
  });

  it("takes what a killed run left (marked as leafmesh's) once adopted, and never an address the operator put there", async () => {
    const crashed = await ensureDummyInterface({ namespace }); // a run killed before its remove()
    expect(crashed.created).toBe(true);
    const next = await ensureDummyInterface({ namespace });
    expect(next).toMatchObject({ created: false, leftover: true });
    next.adopt();
    await next.remove();
    expect(await ip(["-n", namespace, "-o", "addr", "show"])).not.toMatch(/169\.254\.96\.16/);

    // The operator's own address (no leafmesh mark): never leftover, never removed, adopted or not.
    await ip(["-n", namespace, "addr", "add", "169.254.96.17/32", "dev", "lo"]);
    const operators = await ensureDummyInterface({ namespace, name: "lo", address: "169.254.96.17" });
    expect(operators).toMatchObject({ created: false, leftover: false });
    operators.adopt();
    await operators.remove();
    expect(await ip(["-n", namespace, "-o", "addr", "show", "dev", "lo"])).toMatch(/169\.254\.96\.17\/32/);
    await ip(["-n", namespace, "addr", "del", "169.254.96.17/32", "dev", "lo"]);
  });

  it("refuses a name longer than an interface name can be", async () => {
    await expect(ensureDummyInterface({ namespace, name: "leafmesh-dns-too-long" })).rejects.toMatchObject({ code: "CONFIG_INVALID" });
  });
});
