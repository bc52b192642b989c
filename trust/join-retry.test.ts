/**
 * A node's join when the hub is not there yet, as on a first day: the agents of a site are started
 * before the hub they join (or while it restarts), or the hub serves no enrolment yet. The node asks
 * again with the same request until the hub answers, and says at once what asking again cannot
 * change (a token of another mesh's CA). Real processes: `leafmesh keys`, `leafmesh hub`.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Writable } from "node:stream";
import { join } from "node:path";
import { createLogger } from "../lib/log.ts";
import { startHubProcess, hubPorts, stopAllProcesses, tempDir, type HubProcess, runCliOk } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys, readKeyState } from "./key-store.ts";
import { joinMesh } from "./join.ts";

let base: string;
let keys: string;
let ports: Awaited<ReturnType<typeof hubPorts>>;
/** Started by the first test (the node waits for it), stopped and started again by the others. */
let hub: HubProcess;

const makeToken = async (dir: string) => (await runCliOk("keys", "token", "--dir", dir, "--url", `tls://127.0.0.1:${ports.client}`, "--uses", "5")).trim();

/** A logger whose lines the test reads. */
function capturedLog() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString().split("\n").filter(Boolean));
      done();
    },
  });
  return { log: createLogger({ level: "info", destination }), text: () => lines.join("\n") };
}

const startHub = (enrol: boolean, dataDir: string): Promise<HubProcess> =>
  startHubProcess({ name: "hub-1", keys, ports, dataDir, extraArgs: enrol ? ["--enrol"] : [] });

beforeAll(async () => {
  requireTools();
  base = tempDir("leafmesh-join-retry-");
  keys = join(base, "keys");
  ports = await hubPorts();
  // As `leafmesh keys init` makes them (the same function, without a CLI process).
  await initKeys({ dir: keys });
}, 60_000);

afterAll(async () => {
  await stopAllProcesses();
});

describe("a node that joins before its hub is there", () => {
  it("asks again while no hub answers, and joins once the hub is up", async () => {
    const token = await makeToken(keys);
    const { log, text } = capturedLog();
    const joining = joinMesh({ token, node: "edge-early", bundleDir: join(base, "joins", "edge-early"), log });
    // The node asks into nothing (nothing listens on the token's address) for a few seconds, then the hub starts.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(text()).toMatch(/the hub did not enrol node 'edge-early' yet: cannot join with token \w+ at tls:\/\/127\.0\.0\.1:\d+: no hub answered there.*asking again/);
    const running = await startHub(true, join(base, "hub-data"));
    const joined = await joining;
    expect(joined.joinedNow).toBe(true);
    expect(readKeyState(keys).nodes["edge-early"]?.user).toBeDefined();
    hub = running;
  }, 120_000);

  it("says at once what asking again cannot change: a hub whose certificate is not of the token's CA", async () => {
    const other = join(base, "other-keys");
    await initKeys({ dir: other });
    const token = await makeToken(other);
    const { log, text } = capturedLog();
    const refused = await joinMesh({ token, node: "edge-stray", bundleDir: join(base, "joins", "edge-stray"), log }).then(
      () => undefined,
      (error: Error) => error,
    );
    expect(refused?.message).toMatch(/the hub's certificate is not of the token's mesh CA/);
    // Asked once, not for the 3 minutes a hub that is away is asked for.
    expect(text()).not.toMatch(/asking again/);
  }, 60_000);

  it("asks again while the hub serves no enrolment, then says so with how long it asked", async () => {
    const token = await makeToken(keys);
    await hub.stop();
    hub = await startHub(false, join(base, "hub-data"));
    const { log, text } = capturedLog();
    const refused = await joinMesh({ token, node: "edge-noenrol", bundleDir: join(base, "joins", "edge-noenrol"), log, retryForMs: 6_000 }).then(
      () => undefined,
      (error: Error) => error,
    );
    expect(refused?.message).toMatch(/no hub there serves enrolment \(start one hub with --enrol\).*\(asked [2-9] times over 6 s\)/);
    expect(text()).toMatch(/asking again/);
    // The same node, once the hub is started again with --enrol: its second try (same keys) joins.
    await hub.stop();
    hub = await startHub(true, join(base, "hub-data"));
    const joined = await joinMesh({ token, node: "edge-noenrol", bundleDir: join(base, "joins", "edge-noenrol"), log });
    expect(joined.joinedNow).toBe(true);
  }, 120_000);
});
