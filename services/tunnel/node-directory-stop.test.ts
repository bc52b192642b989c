/**
 * A node directory stopped while its put is under way (an agent stopped right after its start, its connection
 * closed behind the tunnel's stop): the cut put is the stop's, not "hub unreachable?" said as a warning.
 * A real nats-server, and a subscriber in the put's path that never answers, so that the put is still waiting.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { afterAll, describe, expect, it } from "vitest";
import { systemClock } from "../../lib/clock.ts";
import { NatsServerSupervisor } from "../../nats/supervisor.ts";
import { capturedLog } from "../../test/support/log-lines.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { NodeDirectory } from "./node-directory.ts";
import { meshProtocol } from "../../bus/protocol.ts";

const dir = mkdtempSync(join(tmpdir(), "leafmesh-directory-stop-"));
let server: NatsServerSupervisor | undefined;
afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("a node directory stopped with its put under way", () => {
  it("says no warning when the stop closes the connection under the put", { timeout: 30_000 }, async () => {
    const [client, monitor] = [await freePort(), await freePort()];
    server = new NatsServerSupervisor({ name: "plain", dataDir: dir, monitor: { host: "127.0.0.1", port: monitor }, log: capturedLog().log, configText: `listen: 127.0.0.1:${client}\nhttp: 127.0.0.1:${monitor}\n` });
    await server.start();
    // Takes every request and answers none: the directory's put waits for its answer.
    const silent = await connect({ servers: `127.0.0.1:${client}` });
    const asked: string[] = [];
    silent.subscribe(">", { callback: (_error, message) => void asked.push(message.subject) });
    await silent.flush();
    const nats = await connect({ servers: `127.0.0.1:${client}` });
    const { log, lines } = capturedLog("debug");
    const directory = new NodeDirectory({
      nats, node: "edge-a", log, clock: systemClock,
      record: () => ({ node: "edge-a", peerId: "12D3KooWedgea", listen: [], observed: [], nat: "unknown", relay: true, pskFingerprint: "0000000000000000", protocol: meshProtocol, at: new Date().toISOString() }),
    });
    directory.start();
    await eventually(() => asked.some((subject) => subject.includes("mesh-nodes")), 10_000, "the put to be asked");
    // The agent's stop: the tunnel stops its directory, then the process's connection closes.
    directory.stop();
    await nats.close();
    await silent.close();
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Before: "cannot publish the node record in mesh-nodes (hub unreachable?) …" at warn, with "connection closed".
    expect(lines.filter((line) => Number(line.level) >= 40).map((line) => line.msg)).toEqual([]);
    expect(lines.some((line) => line.msg === "node record put ended by the stop")).toBe(true);
  });
});
