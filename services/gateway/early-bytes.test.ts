/**
 * The gateway's first bytes to a backend on another node go with the tunnel stream's target header
 * (lib/early-bytes.ts; backend-join.ts, upstream.ts): a TCP route's client bytes, a TLS passthrough's ClientHello and
 * a new upstream connection's HTTP request reach the backend while the opener has no answer yet; after a refusal
 * they go once to the next endpoint; a cut after they went resets the TCP client, answers the HTTP client 502, and
 * tries no other endpoint (the route's retry policy, which names connect failures, included). The real gateway
 * actor, a real StreamServer on edge-b over real TLS stream sessions, and a relay that holds back the answers
 * (test/support/held-answer-tunnel.ts). Every service has three endpoints on edge-b: 127.0.0.3 and 127.0.0.4, where
 * nothing listens (edge-b refuses), and the recording backend on 127.0.0.2; whichever the balancer tried first, one
 * is left untried when the backend's stream is cut.
 */
import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { StreamDialer } from "../../bus/streams.ts";
import { EarlyBytesInDoubt, type EarlyBytes } from "../../lib/early-bytes.ts";
import { silentLogger } from "../../lib/log.ts";
import { catalogFeed, getWithHost } from "../../test/support/gateway-fixture.ts";
import { backendManifests, certificateSecrets, ingressManifests, type BackendEndpoint } from "../../test/support/gateway-manifests.ts";
import { peerAt, startHeldAnswerTunnel, type HeldAnswerTunnel } from "../../test/support/held-answer-tunnel.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";

let tunnel: HeldAnswerTunnel;
let backend: Server;
let gateway: GatewayActor;
const ports = { http: 0, https: 0, tls: 0, tcp: 0 };
const open = new Set<Socket>();
/** Each connection the backend took: the bytes it read, and how it ended ("end" or the error's code). */
const arrivals: { bytes: Buffer; how?: string }[] = [];
/** Each stream the gateway opened: its target, its early bytes, and how the open ended. */
const attempts: { host: string; early?: EarlyBytes; answered?: boolean; error?: unknown }[] = [];

beforeAll(async () => {
  tunnel = await startHeldAnswerTunnel();
  const backendPort = await freePort("127.0.0.2");
  // An HTTP request is answered (and the connection closed: none is kept idle for the next test); anything else echoed.
  backend = createServer({ allowHalfOpen: true }, (socket) => {
    const arrival: { bytes: Buffer; how?: string } = { bytes: Buffer.alloc(0) };
    arrivals.push(arrival);
    open.add(socket);
    socket.on("data", (chunk: Buffer) => {
      arrival.bytes = Buffer.concat([arrival.bytes, chunk]);
      const text = arrival.bytes.toString("latin1");
      if (!text.startsWith("GET ")) return void socket.write(chunk);
      if (text.includes("\r\n\r\n")) socket.end("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    });
    socket.on("end", () => ((arrival.how ??= "end"), socket.end()));
    socket.on("error", (error: NodeJS.ErrnoException) => (arrival.how = error.code ?? error.message));
  });
  await new Promise<void>((resolve) => backend.listen(backendPort, "127.0.0.2", resolve));
  for (const key of Object.keys(ports) as (keyof typeof ports)[]) ports[key] = await freePort();
  const endpoints: BackendEndpoint[] = ["127.0.0.3", "127.0.0.2", "127.0.0.4"].map((ip) => ({ ip, port: backendPort, node: "edge-b" }));
  const objects = [...ingressManifests("istio", { ports }), ...backendManifests({ echo: endpoints, "tls-pass": endpoints, flaky: endpoints }), ...certificateSecrets()];
  // retry.example.com's route also retries connect failures: a request in doubt must not be sent again even so.
  const retry = objects.find((object) => (object as { metadata: { name: string } }).metadata.name === "retry") as { spec: { http: { retries: { retryOn: string } }[] } };
  retry.spec.http[0].retries.retryOn = "connect-failure,5xx";
  const streams = tunnel.opener();
  const dialer: StreamDialer = {
    async openStream(_node, to, options) {
      const attempt: (typeof attempts)[number] = { host: to.host, early: options?.early };
      attempts.push(attempt);
      tunnel.held = true;
      const opening = streams.open(peerAt(2), "relayed", to, options?.signal, options?.early);
      opening.then(
        () => (attempt.answered = true),
        (error: unknown) => (attempt.error = error),
      );
      // The answer waits until the first bytes went with the header, so that every attempt carries them; edge-b's refusal of the others then comes back.
      await eventually(() => (options?.early?.sentBytes ?? 0) > 0 || attempt.error, 3_000, "the first bytes to go with the header");
      if (to.host !== "127.0.0.2") tunnel.gates.at(-1)?.release();
      return opening;
    },
  };
  gateway = createGatewayActor({ feed: catalogFeed(objects), log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: () => undefined, dialer });
  await gateway.start();
}, 30_000);

afterEach(() => {
  tunnel.releaseAll();
  arrivals.length = 0;
  attempts.length = 0;
});

afterAll(async () => {
  await gateway?.stop();
  for (const socket of open) socket.destroy();
  await tunnel?.close();
  await new Promise((resolve) => backend?.close(resolve));
});

/** The open to the recording backend, once it carries the first bytes. */
const openToBackend = () => eventually(() => attempts.find((attempt) => attempt.host === "127.0.0.2" && (attempt.early?.sentBytes ?? 0) > 0), 5_000, "an open to 127.0.0.2 with the first bytes");

function tcpClient(port: number): { client: Socket; how: Promise<string>; read: () => string } {
  const client = netConnect({ host: "127.0.0.1", port, allowHalfOpen: true });
  open.add(client);
  let read = "";
  client.on("data", (chunk: Buffer) => (read += chunk.toString()));
  const how = new Promise<string>((resolve) => {
    client.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    client.on("end", () => resolve("end"));
  });
  return { client, how, read: () => read };
}

const get = (host: string) => getWithHost(ports.http, host);

describe("the gateway's first bytes to a backend on another node", () => {
  it("go with the stream's header for a TCP route: the backend reads them before the gateway has the answer, once", async () => {
    const { client, read } = tcpClient(ports.tcp);
    client.write("hello backend");
    const arrival = await eventually(() => arrivals.find((each) => each.bytes.toString() === "hello backend"), 5_000, "the first bytes at the backend");
    const attempt = await openToBackend();
    expect(attempt.answered).toBeUndefined();
    expect(attempt.early!.state).toBe("sending");
    tunnel.gates.at(-1)!.release();
    await eventually(() => read() === "hello backend", 5_000, "the echo");
    client.write(" and more");
    await eventually(() => read() === "hello backend and more", 5_000, "the echo of the rest");
    expect(arrival.bytes.toString()).toBe("hello backend and more"); // nothing twice, no frame headers
    expect(attempt.early!.state).toBe("committed");
    client.end();
  });

  it("go with the stream's header for a TLS passthrough: the ClientHello read to route it reaches the backend before the answer", async () => {
    const client = tlsConnect({ host: "127.0.0.1", port: ports.tls, servername: "pass.example.com", rejectUnauthorized: false });
    client.on("error", () => undefined);
    const arrival = await eventually(() => arrivals.find((each) => each.bytes.includes("pass.example.com")), 5_000, "the ClientHello at the backend");
    expect(arrival.bytes[0]).toBe(0x16); // a TLS handshake record, untouched
    const attempt = await openToBackend();
    expect(attempt.answered).toBeUndefined();
    tunnel.gates.at(-1)!.release();
    await eventually(() => attempt.answered, 5_000, "the answer");
    expect(attempt.early!.state).toBe("committed");
    client.destroy();
  });

  it("go with the stream's header for a new HTTP/1.1 upstream connection: its request reaches the backend before the answer", async () => {
    const answer = get("retry.example.com");
    const arrival = await eventually(() => arrivals.find((each) => each.bytes.toString().startsWith("GET / HTTP/1.1\r\n")), 5_000, "the request at the backend");
    const attempt = await openToBackend();
    expect(attempt.answered).toBeUndefined();
    expect(arrival.bytes.toString()).toContain("\r\n\r\n"); // the whole head
    tunnel.gates.at(-1)!.release();
    expect(await answer).toEqual({ status: 200, body: "ok" });
    expect(arrival.bytes.toString().match(/GET \//g)).toHaveLength(1);
  });

  it("go once more to the next endpoint after a refusal, and the backend reads each client's once", async () => {
    // Round robin: of two clients one tries a refusing endpoint first.
    for (const request of ["first client", "second client"]) {
      const { client, read } = tcpClient(ports.tcp);
      client.write(request);
      const before = attempts.length;
      await eventually(() => attempts.length > before && attempts.at(-1)!.host === "127.0.0.2" && (attempts.at(-1)!.early?.sentBytes ?? 0) > 0, 5_000, "an open to the backend");
      tunnel.gates.at(-1)!.release();
      await eventually(() => read() === request, 5_000, "the echo");
      client.end();
    }
    const refused = attempts.filter((attempt) => attempt.host !== "127.0.0.2");
    expect(refused.length).toBeGreaterThan(0);
    for (const attempt of refused) expect(attempt.early!.state).toBe("given back"); // edge-b refused with them in hand
    expect(arrivals.map((arrival) => arrival.bytes.toString()).sort()).toEqual(["first client", "second client"]);
  });

  it("reset a TCP client when the stream is cut after they went, and no other endpoint is tried", async () => {
    const { client, how } = tcpClient(ports.tcp);
    client.write("POST /order");
    const arrival = await eventually(() => arrivals.find((each) => each.bytes.toString() === "POST /order"), 5_000, "the first bytes at the backend");
    const tried = attempts.length;
    const counted = gateway.status().counters["tcp reset: early bytes in doubt"] ?? 0;
    tunnel.gates.at(-1)!.cut(); // between header and answer, the bytes already at the backend
    expect(await how).toBe("ECONNRESET");
    await eventually(() => arrival.how, 5_000, "the backend's connection to end");
    expect(arrival.how).toBe("ECONNRESET");
    // Counted once the gateway gave up the connection: no other open was made by then.
    expect(gateway.status().counters["tcp reset: early bytes in doubt"]).toBe(counted + 1);
    expect(attempts.length).toBe(tried);
    expect(attempts.at(-1)!.error).toBeInstanceOf(EarlyBytesInDoubt);
    expect(arrivals.filter((each) => each.bytes.length > 0)).toHaveLength(1);
  });

  it("answer an HTTP request 502 when its new connection is cut after it went, not retried though its route retries connect failures", async () => {
    const answer = get("retry.example.com");
    await eventually(() => arrivals.find((each) => each.bytes.toString().startsWith("GET / HTTP/1.1\r\n")), 5_000, "the request at the backend");
    const tried = attempts.length;
    tunnel.gates.at(-1)!.cut();
    expect((await answer).status).toBe(502);
    expect(attempts.length).toBe(tried);
    expect(gateway.status().counters["backend connect failed: early bytes in doubt"]).toBeGreaterThan(0);
    expect(arrivals.filter((each) => each.bytes.length > 0)).toHaveLength(1);
  });
});
