import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupPrefix, createLab, runChecked, runCommand, type Lab } from "./netns.ts";

/** Gone, or a zombie waiting for a reaper that this container's init may never be. */
function processGone(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.startsWith("Z") ?? true;
  } catch {
    return true;
  }
}

// Own prefix per test file: files run in parallel and each cleans its prefix.
const prefix = "lmpxn-";

describe("lab/netns", () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await createLab({ prefix });
  });
  afterAll(async () => {
    await lab?.teardown();
  });

  it("connects namespaces by veth and through a bridge, routes, and runs commands inside", async () => {
    const a = await lab.namespace("a");
    const b = await lab.namespace("b");
    const c = await lab.namespace("c");
    expect(a).toBe("lmpxn-a");
    await lab.veth({ a, b, nameA: "p0", nameB: "p0", addressA: "198.18.30.1/30", addressB: "198.18.30.2/30" });
    await lab.exec(a, ["ping", "-c1", "-W2", "198.18.30.2"]);

    const bridge = await lab.bridge("br0");
    await lab.link({ namespace: b, bridge, address: "198.18.31.2/24" });
    await lab.link({ namespace: c, bridge, address: "198.18.31.3/24" });
    await lab.exec(b, ["ping", "-c1", "-W2", "198.18.31.3"]);

    // a reaches c through b once b forwards and both have routes.
    await lab.exec(b, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    await lab.route(a, "198.18.31.0/24", { via: "198.18.30.2" });
    await lab.route(c, "198.18.30.0/30", { via: "198.18.31.2" });
    await lab.exec(a, ["ping", "-c1", "-W2", "198.18.31.3"]);

    const failed = await lab.run(a, ["ping", "-c1", "-W1", "198.18.29.9"]);
    expect(failed.code).not.toBe(0);
    await expect(lab.exec(a, ["false"])).rejects.toThrow(/exited with 1/);
  });

  it("teardown kills spawned processes and removes every namespace and link", async () => {
    const other = await createLab({ prefix: "lmpxm-" });
    const ns = await other.namespace("x");
    await other.bridge("br1");
    await other.veth({ a: ns, b: "host", nameA: "eth0", nameB: "hx" });
    const child = other.spawn(ns, ["sleep", "600"]);
    const exited = new Promise((resolve) => child.once("exit", resolve));
    await other.teardown();
    await exited;
    expect(await runChecked(["ip", "netns", "list"])).not.toContain("lmpxm-");
    expect(await runChecked(["ip", "-o", "link", "show"])).not.toContain("lmpxm-");
    await other.teardown(); // twice is fine
  });

  it("removes what a crashed run left, including processes still holding a namespace", async () => {
    await runChecked(["ip", "netns", "add", "lmpxk-left"]);
    await runChecked(["ip", "link", "add", "lmpxk-br", "type", "bridge"]);
    // A detached process that outlives its (crashed) parent, inside the namespace.
    await runChecked(["sh", "-c", "ip netns exec lmpxk-left setsid sleep 600 >/dev/null 2>&1 < /dev/null &"]);
    const pids = async () => (await runCommand(["ip", "netns", "pids", "lmpxk-left"])).stdout.trim();
    for (let i = 0; i < 100 && (await pids()) === ""; i++) await new Promise((r) => setTimeout(r, 20));
    const pid = Number((await pids()).split(/\s+/)[0]);
    expect(pid).toBeGreaterThan(0);

    const next = await createLab({ prefix: "lmpxk-" });
    expect(await runChecked(["ip", "netns", "list"])).not.toContain("lmpxk-");
    expect(await runChecked(["ip", "-o", "link", "show"])).not.toContain("lmpxk-");
    expect(processGone(pid)).toBe(true);
    await next.teardown();
  });

  it("refuses a prefix that would match too much", async () => {
    await expect(cleanupPrefix("")).rejects.toThrow(/lab prefix/);
    await expect(createLab({ prefix: "l" })).rejects.toThrow(/lab prefix/);
  });
});
