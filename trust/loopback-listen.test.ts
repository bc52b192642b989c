/**
 * A secured site server, and an enrolling hub, given a specific client listen address. Their own process reaches its
 * server with a loopback-only user (the site bundle's local.creds; the hub's enrolment service), and on a specific
 * address it connects from that address: nats-server refused it ("Bad src Ip") and the process exited, the site with
 * "Authorization Violation … is --keys of this mesh?", the hub with "unexpected error: AuthorizationError" after its
 * server had started. Now both refuse the address at once and say why and what to listen on instead. Run in a
 * namespace whose only address besides loopback is the one given (on this machine's loopback every address is
 * reached from 127.0.0.1).
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, hostNamespace, type Lab } from "../lab/netns.ts";
import { cliPath, nodeBinary, runCliOk, tempDir, stopAllProcesses } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys } from "./key-store.ts";

// 198.18.191.0/30: a site's LAN address, this machine on the other end.
const lanAddress = "198.18.191.1";
let lab: Lab;
let namespace: string;
let keys: string;

beforeAll(async () => {
  requireTools();
  lab = await createLab({ prefix: "lmlb-" });
  namespace = await lab.namespace("site");
  await lab.veth({ a: namespace, b: hostNamespace, nameA: "lan", nameB: "lan", addressA: `${lanAddress}/30`, addressB: "198.18.191.2/30" });
  keys = join(tempDir("leafmesh-loopback-listen-"), "keys");
  await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", lanAddress] });
  await runCliOk("keys", "issue", "--dir", keys, "--node", "edge-a");
  await runCliOk("keys", "issue-site", "--dir", keys, "--site", "shop", "--members", "edge-a", "--hosts", lanAddress);
}, 60_000);

afterAll(async () => {
  await stopAllProcesses();
  await lab?.teardown();
});

/** Runs `leafmesh ARGS` in the namespace (bounded: a process that started would run on). */
async function leafmesh(args: string[]): Promise<{ code: number; output: string }> {
  const result = await lab.run(namespace, [nodeBinary, cliPath, ...args, "--data", tempDir(), "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off"], { timeoutMs: 30_000 });
  return { code: result.code, output: `${result.stdout}${result.stderr}` };
}

describe("a client listen address that the process's own loopback-only user cannot reach its server on", () => {
  it("is refused at once by a secured site server, which says what to listen on", async () => {
    const result = await leafmesh(["site", "--name", "shop", "--keys", keys, "--upstream", "tls://198.18.191.2:7422", "--listen", `${lanAddress}:4222`, "--leaf-listen", `${lanAddress}:7422`]);
    expect(result.code).not.toBe(0);
    expect(result.output).toContain(`--listen ${lanAddress}:4222: with --keys, the site's own process (the site bundle's loopback-only user) connects to it from loopback only`);
    expect(result.output).toContain("Listen on 0.0.0.0:4222 (or [::]), or on 127.0.0.1:4222");
    expect(result.output).not.toContain("Authorization Violation");
  });

  it("is refused at once by an enrolling hub, before it writes anything", async () => {
    const result = await leafmesh(["hub", "--name", "hub-1", "--keys", keys, "--enrol", "--listen", `${lanAddress}:4222`, "--leaf-listen", `${lanAddress}:7422`]);
    expect(result.code).not.toBe(0);
    expect(result.output).toContain(`--listen ${lanAddress}:4222: with --enrol, the hub's enrolment service (a loopback-only user of the enrol account) connects to it from loopback only`);
    expect(result.output).not.toContain("AuthorizationError");
  });
});
