/**
 * The shared TCP listener (shared-listener.ts) with the traffic actor on real
 * loopback sockets: every TCP service port on one port, each on a loopback
 * address of its own; connections to any other address are reset; and the
 * catalog's size no longer meets the agent's open files (docs/limits.md, wall 3),
 * shown in a child process whose descriptor limit is below the service count.
 */
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { nodeBinary, tempDir } from "../../test/support/processes.ts";
import { deleteService, listenerAddress, putService, whoAnswers } from "../../test/support/traffic-catalog.ts";
import { createTrafficActor, type TrafficActor } from "./actor.ts";
import { serviceAddress } from "./shared-listener.ts";

const tcp = (targetPort: number) => [{ name: "main", protocol: "TCP" as const, port: 80, targetPort }];

describe("the shared TCP listener", () => {
  let port: number;
  const endpoints: Server[] = [];
  let traffic: TrafficActor | undefined;

  beforeAll(async () => {
    port = await freePort();
    for (const host of ["127.0.0.2", "127.0.0.3"]) {
      const server = createServer((socket) => {
        socket.on("error", () => undefined);
        socket.end(`${host}\n`);
      });
      await new Promise<void>((done) => server.listen(port, host, done));
      endpoints.push(server);
    }
  });
  afterEach(async () => {
    await traffic?.stop();
    traffic = undefined;
  });
  afterAll(async () => {
    for (const server of endpoints) await new Promise((done) => server.close(done));
  });

  it("serves every TCP service port on one port, each on its own loopback address, and UDP on a socket of its own", async () => {
    const feed = new IndexFeed();
    putService(feed, { name: "a", clusterIP: "198.19.0.1", ports: tcp(port), endpoints: [{ ip: "127.0.0.2" }] });
    putService(feed, { name: "b", clusterIP: "198.19.0.2", ports: tcp(port), endpoints: [{ ip: "127.0.0.3" }] });
    putService(feed, { name: "d", clusterIP: "198.19.0.3", ports: [{ name: "dns", protocol: "UDP", port: 53, targetPort: 5353 }], endpoints: [{ ip: "127.0.0.2" }] });
    traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a" });
    await traffic.start();
    const byKey = new Map(traffic.listeners().map((binding) => [binding.key, binding]));
    const a = listenerAddress(byKey.get("lab/a:main/TCP")!);
    const b = listenerAddress(byKey.get("lab/b:main/TCP")!);
    expect(a.port).toBe(b.port);
    expect(traffic.stats().sharedTcpPort).toBe(a.port); // what status shows beside the listeners
    expect(a.host).not.toBe(b.host);
    for (const host of [a.host, b.host]) expect(host).toMatch(/^127\.(12[89]|1[3-9]\d|2[0-5]\d)\./);
    expect(byKey.get("lab/d:dns/UDP")).toMatchObject({ listenerHost: "127.0.0.1" });
    expect(byKey.get("lab/d:dns/UDP")!.listenerPort).not.toBe(a.port);
    expect(await whoAnswers(a)).toBe("127.0.0.2");
    expect(await whoAnswers(b)).toBe("127.0.0.3");
  });

  it("resets a connection to any address that is not a service port's, a removed one's too, and never gives that address to another", async () => {
    const feed = new IndexFeed();
    putService(feed, { name: "a", clusterIP: "198.19.0.1", ports: tcp(port), endpoints: [{ ip: "127.0.0.2" }] });
    traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a" });
    await traffic.start();
    const a = listenerAddress(traffic.listeners()[0]);
    expect(await whoAnswers(a)).toBe("127.0.0.2");
    expect(await whoAnswers({ host: "127.0.0.1", port: a.port })).toBe("ECONNRESET"); // the shared port, on an address no service has
    expect(await whoAnswers({ host: serviceAddress(4_000_000), port: a.port })).toBe("ECONNRESET");
    expect(traffic.stats().counters["tcp refused: not a service address"]).toBe(2);

    deleteService(feed, "lab", "a");
    await eventually(() => traffic!.listeners().length === 0, 5_000, "a's listener to go");
    expect(await whoAnswers(a)).toBe("ECONNRESET"); // a DNAT rule not yet replaced leads nowhere, not to another service
    putService(feed, { name: "b", clusterIP: "198.19.0.2", ports: tcp(port), endpoints: [{ ip: "127.0.0.3" }] });
    await eventually(() => traffic!.listeners().length === 1, 5_000, "b's listener");
    const b = listenerAddress(traffic.listeners()[0]);
    expect(b.host).not.toBe(a.host);
    expect(await whoAnswers(b)).toBe("127.0.0.3");
    expect(await whoAnswers(a)).toBe("ECONNRESET");
  });

  it("holds more TCP service ports than the process may open files (wall 3); a listener per port could not", { timeout: 60_000 }, async () => {
    const dir = tempDir("lm-shared-");
    const script = join(dir, "many.ts");
    const root = resolve(import.meta.dirname, "../..");
    // 3,000 TCP service ports under a limit of 1,024 descriptors: each reachable through the shared listener.
    writeFileSync(
      script,
      `
import { IndexFeed } from "${root}/bus/catalog-feed.ts";
import { silentLogger } from "${root}/lib/log.ts";
import { putService, whoAnswers, listenerAddress } from "${root}/test/support/traffic-catalog.ts";
import { createTrafficActor } from "${root}/services/traffic/actor.ts";
const [sharedTcpListener, port] = [process.argv[2] === "shared", Number(process.argv[3])];
const feed = new IndexFeed();
for (let i = 0; i < 3000; i++) putService(feed, { name: "s" + i, clusterIP: "198.19." + (i >> 8) + "." + (i & 255), ports: [{ name: "main", protocol: "TCP", port: 80, targetPort: port }], endpoints: [{ ip: "127.0.0.2" }] });
const traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a", sharedTcpListener });
await traffic.start();
const bindings = traffic.listeners();
const answers = [await whoAnswers(listenerAddress(bindings[0])), await whoAnswers(listenerAddress(bindings.at(-1)))];
console.log(JSON.stringify({ listeners: bindings.length, answers, error: traffic.actor.getSnapshot().context.lastError ?? null }));
await traffic.stop(); // and the process exits by itself: nothing of the agent's is left open
`,
    );
    const run = (mode: string) =>
      new Promise<{ listeners: number; answers: string[]; error: string | null }>((done, fail) =>
        execFile("sh", ["-c", `ulimit -n 1024 && exec "$0" "$@"`, nodeBinary, script, mode, String(port)], { timeout: 50_000 }, (error, stdout, stderr) =>
          error ? fail(new Error(`${error.message}\n${stderr}`)) : done(JSON.parse(stdout.trim().split("\n").at(-1)!)),
        ),
      );
    expect(await run("shared")).toEqual({ listeners: 3000, answers: ["127.0.0.2", "127.0.0.2"], error: null });
    const perPort = await run("per-port");
    expect(perPort.listeners).toBeLessThan(3000);
    expect(perPort.error).toContain("EMFILE");
    expect(perPort.error!.length).toBeLessThan(1_000); // five failures by name and a count, not two thousand
  });
});
