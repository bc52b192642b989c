/**
 * Every line a hub and an agent with all its actors log is one JSON object that names each field once, at every
 * level of logging: a collector that detects repeated names (Elasticsearch's parser does) refuses a line like
 * {"actor":"agent","actor":"gateway",…}, and the others keep one of the two silently. The agent's actors logged
 * exactly that (their loggers were children of one bound to actor "agent"), and "nats-server ready" and "agent
 * ready" named pid and node twice.
 */
import { existsSync, readFileSync } from "node:fs";
import { get } from "node:http";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { startGatewayBackends, type GatewayBackends } from "./support/gateway-backends.ts";
import { backendManifests, ingressManifests } from "./support/gateway-manifests.ts";
import { repeatedNames } from "./support/log-lines.ts";
import { writeManifest } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { startAgentProcess, startHubProcess, startSiteCluster, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

let backends: GatewayBackends | undefined;
afterEach(async () => {
  await stopAllProcesses();
  await backends?.close();
  backends = undefined;
});

/** The status of a GET through the gateway (fetch does not send a Host header of its own); undefined: no answer. */
function statusOf(port: number, host: string, path: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const request = get({ host: "127.0.0.1", port, path, headers: { host }, timeout: 2_000 }, (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.on("timeout", () => request.destroy());
    request.on("error", () => resolve(undefined));
  });
}

/** The process's lines that are not one JSON object naming each field once, with the reason. */
function badLines(process: LeafmeshProcess): string[] {
  return process
    .output()
    .split("\n")
    .filter((line) => line.trim() !== "")
    .flatMap((line) => {
      try {
        const repeated = repeatedNames(line);
        return repeated.length === 0 ? [] : [`${repeated.join(", ")} twice in ${line.slice(0, 300)}`];
      } catch {
        return [`not JSON: ${line.slice(0, 300)}`];
      }
    });
}

describe("log lines", () => {
  it("are JSON objects that name each field once, from the hub, a site's servers and an agent running every actor, at debug level", { timeout: 120_000 }, async () => {
    backends = await startGatewayBackends({ host: "127.0.0.1", basePort: 0 });
    const ports = { http: await freePort(), https: await freePort(), tls: await freePort(), tcp: await freePort() };
    const manifests = tempDir();
    writeManifest(manifests, "backends.yaml", backendManifests(backends.endpoints("edge-a", "127.0.0.1")));
    writeManifest(manifests, "ingress.yaml", ingressManifests("gateway-api", { ports }));
    const hub = await startHubProcess({ name: "hub-1", manifests, extraArgs: ["--log-level", "debug"] });
    // The access log in a file of its own (--gateway-access-log); services/gateway/access-file.test.ts reads the default's lines.
    const accessFile = join(tempDir(), "access.log");
    // A site server between them, as at an edge site: the agent attaches to the site.
    const site = await startSiteCluster({ site: "factory", servers: ["factory-1"], upstreams: [hub.leafUrl], extraArgs: ["--log-level", "debug"] });
    const dnsPort = await freePort();
    const agent = await startAgentProcess({
      node: "edge-a",
      hubs: site.map((server) => server.leafUrl),
      extraArgs: ["--upstream-domain", "factory", "--log-level", "debug", "--gateway-access-log", accessFile, "--dns", `127.0.0.1:${dnsPort}`, "--upstream", "127.0.0.1:1", "--socks", `127.0.0.1:${await freePort()}`, "--gateway", "127.0.0.1"],
    });
    // A request through the gateway: its access-log line, after the lines of every actor's start.
    await eventually(async () => (await statusOf(ports.http, "shop.example.com", "/api/orders")) === 200, 30_000, "an answer through the gateway");
    await eventually(() => existsSync(accessFile) && /"msg":"request"/.test(readFileSync(accessFile, "utf8")), 5_000, "the request's access-log line in its file");
    const accessLines = readFileSync(accessFile, "utf8").split("\n").filter(Boolean);
    expect(accessLines.flatMap((line) => repeatedNames(line))).toEqual([]);
    expect(JSON.parse(accessLines[0])).toEqual(expect.objectContaining({ node: "edge-a", actor: "gateway", log: "access", host: "shop.example.com", path: "/api/orders", status: 200, msg: "request" }));
    expect(agent.output()).not.toContain('"log":"access"');
    for (const actor of ["dns", "traffic", "proxier", "socks", "gateway"]) expect(agent.output(), `a line of the ${actor} actor`).toContain(`"actor":"${actor}"`);
    // Said once: the DNS actor's start was announced twice, by the actor and again by the agent ("DNS serving", "cluster DNS serving").
    const dnsServing = agent.output().split("\n").filter((line) => line.includes('"actor":"dns"') && line.includes('"level":30') && line.includes(String(dnsPort)));
    expect(dnsServing).toHaveLength(1);
    await agent.stop();
    for (const server of site) await server.stop();
    await hub.stop();
    expect(badLines(agent)).toEqual([]);
    for (const server of site) expect(badLines(server)).toEqual([]);
    expect(badLines(hub)).toEqual([]);
  });
});
