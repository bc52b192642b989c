/**
 * A role that cannot start for something on this machine (an address another process holds, a --keys path that
 * holds nothing): it ends with the flag to change and why, exit 2 (a configuration to fix), no stack trace and no
 * library's advice, and nothing left running.
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createSocket } from "node:dgram";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "./support/ports.ts";
import { runCli, runCliOk, stopAllProcesses, tempDir } from "./support/processes.ts";

afterAll(() => stopAllProcesses());

describe("a start refused for something on this machine", () => {
  it("--tunnel-listen on a port in use: names the flag, the address and why", { timeout: 60_000 }, async () => {
    const base = tempDir("leafmesh-start-failures-");
    const psk = join(base, "swarm.key");
    writeFileSync(psk, `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString("hex")}\n`, { mode: 0o600 });
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const taken = (holder.address() as { port: number }).port;
    try {
      const args = ["agent", "--node", "edge-a", "--insecure", "--psk", psk, "--hub", `nats://127.0.0.1:${await freePort()}`, "--data", join(base, "edge-a"), "--intercept", "off", "--mdns", "off", "--metrics-listen", "off"];
      for (const flag of ["--nats-listen", "--monitor-listen"]) args.push(flag, `127.0.0.1:${await freePort()}`);
      const result = await runCli([...args, "--tunnel-listen", `/ip4/127.0.0.1/tcp/${taken}`], 45_000);
      // Before: exit 1, "tunnel could not start: Some configured addresses failed to be listened on, you may need to ...
      // set `transportManager.faultTolerance` to NO_FATAL", and the listen error's stack.
      expect(result.stderr).toContain(`leafmesh agent: --tunnel-listen /ip4/127.0.0.1/tcp/${taken}: the address is in use (another agent on this machine? each needs a --tunnel-listen port of its own)`);
      expect(result.stderr).not.toContain("faultTolerance");
      expect(result.stderr).not.toMatch(/\n\s+at /);
      expect(result.code).toBe(2);
    } finally {
      holder.close();
    }
  });

  it("--keys naming no directory (a path mistyped): says so, not to make keys there", { timeout: 60_000 }, async () => {
    const base = tempDir("leafmesh-start-failures-");
    const missing = join(base, "mesh-keyz");
    const ports = async (...flags: string[]) => (await Promise.all(flags.map(async (flag) => [flag, `127.0.0.1:${await freePort()}`]))).flat();
    const hub = await runCli(["hub", "--name", "hub-1", "--data", join(base, "hub"), "--keys", missing, "--metrics-listen", "off", ...(await ports("--listen", "--leaf-listen", "--monitor-listen", "--cluster-listen"))], 30_000);
    // Before: "holds no mesh keys (no state.json): run `leafmesh keys init --dir <the mistyped path>` first": a new mesh there.
    expect(hub.stderr).toContain(`leafmesh hub: --keys ${missing}: no such directory (a path mistyped?): give the mesh's keys directory (made once by 'leafmesh keys init')`);
    expect(hub.code).toBe(2);
    const site = await runCli(["site", "--name", "shop-1", "--data", join(base, "site"), "--upstream", `nats://127.0.0.1:${await freePort()}`, "--keys", missing, "--metrics-listen", "off", ...(await ports("--listen", "--leaf-listen", "--monitor-listen"))], 30_000);
    expect(site.stderr).toContain(`leafmesh site: --keys ${missing}: no such directory (a path mistyped?): give the site's bundle`);
    expect(site.code).toBe(2);
    const file = join(base, "swarm.key");
    writeFileSync(file, "not a directory\n");
    const agent = await runCli(["agent", "--node", "edge-a", "--hub", `nats://127.0.0.1:${await freePort()}`, "--data", join(base, "agent"), "--keys", file, "--intercept", "off", "--metrics-listen", "off", ...(await ports("--nats-listen", "--monitor-listen"))], 30_000);
    // Before: "no credentials for node 'edge-a' in …/swarm.key (node.creds is missing: issue them …, or they were revoked)".
    expect(agent.stderr).toContain(`leafmesh agent: --keys ${file}: a file, not a directory: give the node's bundle`);
    expect(agent.code).toBe(2);
  });

  it("--tunnel-tls on a port in use: names the flag and why, exit 2", { timeout: 60_000 }, async () => {
    const base = tempDir("leafmesh-start-failures-");
    const keys = join(base, "keys");
    await runCliOk("keys", "init", "--dir", keys, "--hub-hosts", "127.0.0.1");
    await runCliOk("keys", "issue", "--dir", keys, "--node", "edge-a");
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const taken = (holder.address() as { port: number }).port;
    try {
      const args = ["agent", "--node", "edge-a", "--keys", join(keys, "nodes", "edge-a"), "--hub", `tls://127.0.0.1:${await freePort()}`, "--data", join(base, "edge-a"), "--intercept", "off", "--mdns", "off", "--metrics-listen", "off"];
      for (const flag of ["--nats-listen", "--monitor-listen"]) args.push(flag, `127.0.0.1:${await freePort()}`);
      args.push("--tunnel-listen", `/ip4/127.0.0.1/tcp/${await freePort()}`, "--tunnel-tls", `127.0.0.1:${taken}`);
      const result = await runCli(args, 45_000);
      // Before: "tunnel could not start: cannot listen for TLS tunnel streams on 127.0.0.1:PORT: listen EADDRINUSE: …", exit 1.
      expect(result.stderr).toContain(`leafmesh agent: --tunnel-tls 127.0.0.1:${taken}: cannot listen for TLS tunnel streams there: the address is in use (another agent on this machine? each needs a --tunnel-tls port of its own)`);
      expect(result.code).toBe(2);
    } finally {
      holder.close();
    }
  });

  it("each listener's address in use (--dns, --socks, --metrics-listen, the server's --nats-listen and --monitor-listen; a hub's --leaf-listen): names the flag and the address, exit 2", { timeout: 60_000 }, async () => {
    const base = tempDir("leafmesh-start-failures-");
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const taken = `127.0.0.1:${(holder.address() as { port: number }).port}`;
    // The DNS binds UDP first: its port is held for UDP too.
    const udpHolder = createSocket("udp4");
    await new Promise<void>((resolve) => udpHolder.bind((holder.address() as { port: number }).port, "127.0.0.1", resolve));
    try {
      const agentRun = async (flag: string) => {
        const args = ["agent", "--node", "edge-a", "--insecure", "--hub", `nats://127.0.0.1:${await freePort()}`, "--data", tempDir("leafmesh-start-failures-"), "--intercept", "off", "--mdns", "off"];
        for (const other of ["--nats-listen", "--monitor-listen", "--metrics-listen", "--dns", "--socks"]) args.push(other, other === flag ? taken : `127.0.0.1:${await freePort()}`);
        return { flag, result: await runCli(args, 45_000) };
      };
      const hubRun = async () => {
        const args = ["hub", "--name", "hub-1", "--insecure", "--data", join(base, "hub"), "--metrics-listen", "off", "--leaf-listen", taken];
        for (const other of ["--listen", "--monitor-listen"]) args.push(other, `127.0.0.1:${await freePort()}`);
        return { flag: "--leaf-listen", result: await runCli(args, 45_000), command: "hub" };
      };
      const runs = await Promise.all([...["--dns", "--socks", "--metrics-listen", "--nats-listen", "--monitor-listen"].map(agentRun), hubRun()]);
      for (const { flag, result, command = "agent" } of runs as { flag: string; result: Awaited<ReturnType<typeof runCli>>; command?: string }[]) {
        // Before, --dns: "cannot listen for DNS on udp 127.0.0.1:PORT: bind EADDRINUSE …", exit 1; the server's ports: its
        // last lines and "Another process holds one of its addresses", naming no flag.
        expect(result.stderr, flag).toContain(`leafmesh ${command}: ${flag} ${taken}: the address is in use`);
        expect(result.stderr, flag).not.toMatch(/\n\s+at /);
        expect(result.code, flag).toBe(2);
      }
    } finally {
      holder.close();
      udpHolder.close();
    }
  });

  it("--proxy-host an address this host does not have: said at start with the flag, exit 2 (its listeners open only as services come)", { timeout: 60_000 }, async () => {
    const args = ["agent", "--node", "edge-a", "--insecure", "--hub", `nats://127.0.0.1:${await freePort()}`, "--data", tempDir("leafmesh-start-failures-"), "--intercept", "off", "--mdns", "off", "--metrics-listen", "off"];
    for (const flag of ["--nats-listen", "--monitor-listen"]) args.push(flag, `127.0.0.1:${await freePort()}`);
    const result = await runCli([...args, "--proxy-host", "198.18.99.99"], 45_000);
    // Before: the agent ran, and each service's listener failed as it came ("could not open 1 listeners (the other services work)").
    expect(result.stderr).toContain("leafmesh agent: --proxy-host 198.18.99.99: this host has no such address");
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expect(result.code).toBe(2);
  });
});
