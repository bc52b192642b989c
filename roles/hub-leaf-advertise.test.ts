/**
 * `leafmesh hub --leaf-advertise HOST:PORT` (and `leafmesh site --leaf-advertise`, to the site's agents): the leafnode
 * address a hub names to its leafs. nats-server 2.9.10 puts
 * its own leaf address in the INFO every leaf gets (`no_advertise` stops only its cluster peers' URLs), and a leaf
 * dials those before the URLs it was given: after a cut, a site or agent given a proxy or a chosen address was back
 * on the hub's own port (docs/nats-facts.md, "Configuration pitfalls"). Checked on a real hub process: the INFO its
 * leaf port sends names the advertised address and not its own; a value no leaf can dial is refused naming the flag,
 * and so is, on a secured hub, a name its certificate lacks (leafs check the hub's certificate by the name they dial).
 */
import { connect as connectTcp } from "node:net";
import { PassThrough } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { hubCommand } from "../cli/hub.ts";
import { siteCommand } from "../cli/site.ts";
import { issueSite } from "../trust/site-store.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { launch, startHubProcess, stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { eventually, freePort } from "../test/support/ports.ts";

afterAll(stopAllProcesses);

/** The INFO a leaf gets on connecting to `port` (nats-server sends it first, before any TLS). */
async function leafInfo(port: number): Promise<{ leafnode_urls?: string[] }> {
  return new Promise((resolve, reject) => {
    const socket = connectTcp({ host: "127.0.0.1", port });
    let received = "";
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no INFO from the leaf port ${port} within 10 s (got '${received.slice(0, 200)}')`)));
    socket.on("error", reject);
    socket.on("data", (chunk) => {
      received += chunk.toString();
      const line = /^INFO (\{.*\}) *\r\n/.exec(received);
      if (!line) return;
      socket.destroy();
      resolve(JSON.parse(line[1]) as { leafnode_urls?: string[] });
    });
  });
}

async function hubWith(leafAdvertise: string, security = ["--insecure"]): Promise<{ code: number; stderr: string }> {
  const stderr = new PassThrough();
  let text = "";
  stderr.on("data", (chunk: Buffer) => (text += chunk.toString()));
  const argv = ["--name", "hub-1", "--data", tempDir("leafmesh-advertise-"), ...security, "--leaf-advertise", leafAdvertise];
  const code = await hubCommand.main(argv, { stdout: new PassThrough(), stderr, env: {}, signal: new AbortController().signal });
  return { code, stderr: text };
}

describe("a hub's --leaf-advertise", () => {
  it("is the leaf address the hub's INFO names to its leafs, in place of its own", async () => {
    const hub = await startHubProcess({ name: "hub-1", extraArgs: ["--leaf-advertise", "hub-1.leafmesh.test:17422"] });
    const ownLeafAddress = new URL(hub.leafUrl).host;
    const info = await leafInfo(Number(new URL(hub.leafUrl).port));
    expect(info.leafnode_urls).toEqual(["hub-1.leafmesh.test:17422"]);
    expect(info.leafnode_urls).not.toContain(ownLeafAddress);
  }, 60_000);

  it("refuses an address no leaf can dial, naming the flag", async () => {
    for (const [value, said] of [
      ["nats://hub-1:7422", /--leaf-advertise: 'nats:\/\/hub-1:7422' is a URL: give HOST:PORT/],
      ["0.0.0.0:7422", /--leaf-advertise: '0\.0\.0\.0:7422': 0\.0\.0\.0 is a wildcard, no address a leaf can dial/],
      ["[::]:7422", /--leaf-advertise: '\[::\]:7422': :: is a wildcard/],
      ["hub-1:0", /--leaf-advertise: 'hub-1:0': port 0 is no port a leaf can dial/],
      ["hub-1", /--leaf-advertise: 'hub-1' is not host:port/],
    ] as const) {
      const refused = await hubWith(value);
      expect(refused.code, value).toBe(2);
      expect(refused.stderr).toMatch(said);
    }
  });

  it("on a secured hub, refuses a name the hubs' certificate does not hold, saying how to issue it", async () => {
    requireTools();
    const keys = join(tempDir("leafmesh-advertise-keys-"), "keys");
    await initKeys({ dir: keys, hubHosts: ["hub-1.example.net", "127.0.0.1"] });
    const refused = await hubWith("hub-1.proxy.example.net:17422", ["--keys", keys, "--listen", "127.0.0.1:4222"]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/--leaf-advertise tls:\/\/hub-1\.proxy\.example\.net:17422: the hubs' certificate .* does not name hub-1\.proxy\.example\.net .*agents and sites dial the advertised address first and check the hub's certificate by the name dialled: .*--hub-hosts hub-1\.example\.net,127\.0\.0\.1,hub-1\.proxy\.example\.net/);
  }, 30_000);
});

describe("a site's --leaf-advertise", () => {
  it("is the leaf address the site server's INFO names to its agents, in place of its own", async () => {
    const hub = await startHubProcess({ name: "hub-1" });
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    const site = launch("shop-7", ["site", "--name", "shop-7", "--insecure", "--data", tempDir("leafmesh-advertise-site-"), "--upstream", hub.leafUrl, "--listen", `127.0.0.1:${client}`,
      "--leaf-listen", `127.0.0.1:${leaf}`, "--monitor-listen", `127.0.0.1:${monitor}`, "--metrics-listen", "off", "--leaf-advertise", "shop-7-lan.example.net:7422"], "", "");
    // Before: the site's own 127.0.0.1:<leaf port>, which its agents dialled before the URLs they were given.
    const info = await eventually(() => leafInfo(leaf).catch(() => undefined), 30_000, "the site's leaf port").catch((error: Error) => {
      throw new Error(`${error.message}\n${site.output().slice(-2000)}`);
    });
    expect(info.leafnode_urls).toEqual(["shop-7-lan.example.net:7422"]);
  }, 60_000);

  it("on a secured site, refuses a name the site's certificate does not hold, saying how to issue it", async () => {
    requireTools();
    const keys = join(tempDir("leafmesh-advertise-site-keys-"), "keys");
    await initKeys({ dir: keys, hubHosts: ["hub-1.example.net"] });
    await issueNode({ dir: keys, node: "edge-a" });
    const { bundleDir } = await issueSite({ dir: keys, site: "shop-7", members: ["edge-a"], hosts: ["shop-7.example.net", "127.0.0.1"] });
    const stderr = new PassThrough();
    let text = "";
    stderr.on("data", (chunk: Buffer) => (text += chunk.toString()));
    const argv = ["--name", "shop-7", "--data", tempDir("leafmesh-advertise-site-"), "--keys", bundleDir, "--upstream", "tls://hub-1.example.net:7422", "--listen", "127.0.0.1:4222", "--leaf-advertise", "shop-7-lan.example.net:7422"];
    const code = await siteCommand.main(argv, { stdout: new PassThrough(), stderr, env: {}, signal: new AbortController().signal });
    expect(code).toBe(2);
    expect(text).toMatch(/--leaf-advertise shop-7-lan\.example\.net: the site's certificate .* does not name shop-7-lan\.example\.net .*--hosts shop-7\.example\.net,127\.0\.0\.1,shop-7-lan\.example\.net/);
  }, 30_000);
});
