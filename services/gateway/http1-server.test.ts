/**
 * The gateway's HTTP/1.x front end (http1-server.ts) against real clients on loopback: Node's HTTP client, curl,
 * and raw sockets that send what clients should not (pipelined, malformed, smuggling, half a head, garbage).
 * The handler here is a small one of the test's (echo the body, or answer as told); the forwarder's own behaviour
 * on top of it is gateway.test.ts's.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { request as httpRequest, Agent } from "node:http";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Http1Connection, type Http1Request, type Http1Response } from "./http1-server.ts";

const run = promisify(execFile);

let server: Server;
let port: number;
const counts = new Map<string, number>();
/** What each answered response saw of its end, with its path: finished, or closed before. */
const endings: string[] = [];
/** How the bodies the echo read failed. */
const bodyOutcomes: string[] = [];

/** /echo (and any other path not below): the body back (written as it comes, no length: chunked); /hold: never answers; /len: a fixed-length answer. */
function handle(request: Http1Request, response: Http1Response): void {
  response.once("close", () => endings.push(`${request.url} ${response.writableFinished ? "finished" : "closed early"}`));
  if (request.url === "/hold") return;
  if (request.url === "/len") {
    response.writeHead(200, ["Content-Length", "5", "X-Seen-Host", request.headers.host ?? ""]);
    return void response.end("hello");
  }
  if (request.url === "/headers") {
    const text = JSON.stringify(request.headers);
    response.writeHead(200, ["Content-Length", String(Buffer.byteLength(text))]);
    return void response.end(text);
  }
  if (request.url === "/big") {
    // 64 MiB in pieces of 64 KiB (as the forwarder passes on a backend's reads), as fast as the client takes it.
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let left = 1024;
    response.writeHead(200, ["Content-Length", String(left * chunk.length)]);
    const more = () => {
      while (left > 0) {
        left--;
        if (left === 0) return void response.end(chunk);
        if (!response.write(chunk)) return void response.once("drain", more);
      }
    };
    return more();
  }
  if (request.url === "/bad-header") {
    try {
      response.writeHead(200, ["X-Evil", "a\r\nSet-Cookie: stolen=1"]);
    } catch {
      response.writeHead(502, []);
    }
    return void response.end("refused\n");
  }
  response.writeHead(200, ["Content-Type", "application/octet-stream"]);
  request.on("error", (error: NodeJS.ErrnoException) => bodyOutcomes.push(`${request.url} body error ${error.code}`));
  request.on("data", (chunk: Buffer) => {
    if (!response.write(chunk)) {
      request.pause();
      response.once("drain", () => request.resume());
    }
  });
  request.on("end", () => response.end());
}

beforeAll(async () => {
  server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => undefined);
    new Http1Connection(socket, Buffer.alloc(0), { onRequest: handle, count: (reason) => counts.set(reason, (counts.get(reason) ?? 0) + 1), idleMs: 1_000, headersMs: 1_500, requestMs: 2_000, answerStallMs: 1_500 });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())), 8_000);

/** Sends raw bytes and reads until the server closes (or `ms` passes): what a client sees. */
function raw(bytes: Buffer | string, ms = 3_000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket: Socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString("latin1"), closed });
    };
    const timer = setTimeout(() => done(false), ms);
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => done(true));
    socket.write(bytes);
  });
}

function post(path: string, body: Buffer, agent?: Agent): Promise<{ status: number; body: Buffer; headers: Record<string, unknown>; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: "127.0.0.1", port, path, method: "POST", agent, headers: { "transfer-encoding": "chunked" } }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk) => chunks.push(chunk));
      response.on("end", () => resolve({ status: response.statusCode!, body: Buffer.concat(chunks), headers: response.headers, socket: response.socket as Socket }));
      response.on("error", reject);
    });
    request.on("error", reject);
    // In pieces: the body streams through the front end, not as one read.
    for (let offset = 0; offset < body.length; offset += 64 * 1024) request.write(body.subarray(offset, offset + 64 * 1024));
    request.end();
  });
}

describe("the gateway's HTTP/1.x front end", () => {
  it("streams a 4 MiB chunked body both ways, and keeps the connection for the next request", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const body = randomBytes(4 * 1024 * 1024);
    const first = await post("/echo", body, agent);
    expect(first.status).toBe(200);
    expect(first.headers["transfer-encoding"]).toBe("chunked");
    expect(first.body.equals(body)).toBe(true);
    const second = await post("/echo", Buffer.from("again"), agent);
    expect(second.body.toString()).toBe("again");
    expect(second.socket).toBe(first.socket);
    agent.destroy();
  });

  it("answers pipelined requests in order, on one connection", async () => {
    const one = "GET /len HTTP/1.1\r\nHost: a.example.net\r\n\r\n";
    const seen = await raw(`${one}POST /echo HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc${one.replace("a.example.net", "c.example.net")}`, 1_500);
    const answers = seen.text.split("HTTP/1.1 200 OK").slice(1);
    expect(answers).toHaveLength(3);
    expect(answers[0]).toContain("X-Seen-Host: a.example.net");
    expect(answers[1]).toContain("abc");
    expect(answers[2]).toContain("X-Seen-Host: c.example.net");
  });

  it("refuses what llhttp refuses, as Node's server does: 400 to a malformed or smuggling request, 431 to a huge head", async () => {
    const smuggle = await raw("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /len HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(smuggle.text).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(smuggle.text).not.toContain("200 OK");
    expect(smuggle.closed).toBe(true);
    const bad = await raw("GET /len HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n");
    expect(bad.text).toMatch(/^HTTP\/1\.1 400 /);
    const huge = await raw(`GET /len HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`);
    expect(huge.text).toMatch(/^HTTP\/1\.1 431 /);
    expect(counts.get("http request head too large")).toBeGreaterThanOrEqual(1);
  });

  it("answers 400 to HTTP/1.1 without Host, 417 to an unknown expectation, and 100 Continue before a body that waits for it", async () => {
    expect((await raw("GET /len HTTP/1.1\r\n\r\n")).text).toMatch(/^HTTP\/1\.1 400 /);
    expect((await raw("GET /len HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n")).text).toMatch(/^HTTP\/1\.1 417 /);
    // curl waits for the 100 (or a second) before it sends a body announced with Expect: 100-continue.
    const file = join(mkdtempSync(join(tmpdir(), "leafmesh-http1-")), "body");
    writeFileSync(file, "x".repeat(2 * 1024 * 1024));
    const started = Date.now();
    const { stdout, stderr } = await run("curl", ["-sS", "-v", "--data-binary", `@${file}`, "-H", "Expect: 100-continue", `http://127.0.0.1:${port}/echo`], { maxBuffer: 8 * 1024 * 1024 });
    expect(stderr).toContain("HTTP/1.1 100 Continue");
    expect(stdout).toBe("x".repeat(2 * 1024 * 1024));
    expect(Date.now() - started).toBeLessThan(900);
    rmSync(dirname(file), { recursive: true, force: true });
  });

  it("drops the rest of a body its answer went before, and answers the next request on the connection", async () => {
    // /len answers without reading: 1 MiB of body is more than is held for a reader, so reads stop until it is dropped.
    const body = "b".repeat(1024 * 1024);
    const seen = await raw(`POST /len HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}GET /len HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n`, 5_000);
    expect(seen.text.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(2);
    expect(seen.text).toContain("X-Seen-Host: b");
    expect(seen.closed).toBe(true);
  });

  it("answers an upgrade or CONNECT request as a plain one, then closes (nothing after it is read as HTTP)", async () => {
    const upgrade = await raw("GET /len HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /len HTTP/1.1\r\nHost: b\r\n\r\n");
    expect(upgrade.text.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(1);
    expect(upgrade.text).toContain("Connection: close");
    expect(upgrade.closed).toBe(true);
    const tunnel = await raw("CONNECT /len HTTP/1.1\r\nHost: a\r\n\r\n\x16\x03\x01");
    expect(tunnel.text.match(/^HTTP\/1\.1 \d{3} /gm)).toHaveLength(1);
    expect(tunnel.closed).toBe(true);
  });

  it("checks every pipelined request as the first: one without Host is refused in its turn, after the answer before it", async () => {
    const seen = await raw("GET /len HTTP/1.1\r\nHost: a\r\n\r\nGET /len HTTP/1.1\r\n\r\n");
    expect(seen.text).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*helloHTTP\/1\.1 400 Bad Request\r\n/);
    expect(seen.closed).toBe(true);
  });

  it("gives the forwarder the headers Node would: duplicates joined, Cookie with '; ', User-Agent the first", async () => {
    const seen = await raw("GET /headers HTTP/1.1\r\nHost: a.example.net\r\nUser-Agent: one\r\nUser-Agent: two\r\nX-Tag: x\r\nx-tag: y\r\nCookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n");
    const headers = JSON.parse(seen.text.slice(seen.text.indexOf("\r\n\r\n") + 4));
    expect(headers).toMatchObject({ host: "a.example.net", "user-agent": "one", "x-tag": "x, y", cookie: "a=1; b=2" });
  });

  it("answers HTTP/1.0 without chunks (the close ends the body) and closes after, as it asked", async () => {
    const seen = await raw("POST /echo HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello");
    expect(seen.text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(seen.text).toContain("Connection: close");
    expect(seen.text).not.toContain("chunked");
    expect(seen.text.endsWith("\r\n\r\nhello")).toBe(true);
    expect(seen.closed).toBe(true);
  });

  it("sends no body to HEAD, and refuses a header that would split the answer", async () => {
    const head = await raw("HEAD /len HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    expect(head.text).toContain("Content-Length: 5");
    expect(head.text.endsWith("\r\n\r\n")).toBe(true);
    const split = await raw("GET /bad-header HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    expect(split.text).toMatch(/^HTTP\/1\.1 502 /);
    expect(split.text).not.toContain("stolen");
  });

  it("closes an idle keep-alive connection, and answers 408 to a head that never finishes", async () => {
    const idle = await raw("GET /len HTTP/1.1\r\nHost: a\r\n\r\n", 5_000);
    expect(idle.closed).toBe(true);
    const slow = await raw("GET /len HTTP/1.1\r\nHost: a\r\nX-Slow:", 5_000);
    expect(slow.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(slow.closed).toBe(true);
    expect(counts.get("http request head timed out")).toBeGreaterThanOrEqual(1);
  });

  it("closes a connection whose request body stops halfway: 408 before an answer, a plain close after one", async () => {
    const before = counts.get("http request body timed out") ?? 0;
    // Nothing answered yet (the handler waits): 408, then the close.
    const unanswered = await raw("POST /hold HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc", 6_000);
    expect(unanswered.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(unanswered.closed).toBe(true);
    // Answered before its body (a 404 to a POST, here /len): the rest of the body never comes, and the connection
    // closes all the same; no second answer after the first.
    for (const body of ["Content-Length: 100\r\n\r\nabc", "Transfer-Encoding: chunked\r\n\r\n5\r\nab"]) {
      const answered = await raw(`POST /len HTTP/1.1\r\nHost: a\r\n${body}`, 6_000);
      expect(answered.text).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nhello$/);
      expect(answered.closed).toBe(true);
    }
    expect((counts.get("http request body timed out") ?? 0) - before).toBe(3);
  }, 20_000);

  it("cuts an answer under way whose request body stops halfway, with an RST", async () => {
    // /echo answers as the body comes: its head and the first bytes are out when the body stops.
    const result = await new Promise<{ text: string; error?: string }>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      let text = "";
      const timer = setTimeout(() => resolve({ text, error: "still open" }), 6_000);
      socket.on("data", (chunk) => (text += chunk.toString("latin1")));
      socket.on("error", (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        resolve({ text, error: error.code });
      });
      socket.on("close", () => {
        clearTimeout(timer);
        resolve({ text });
      });
      socket.write("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc");
    });
    expect(result.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(result.error).toBe("ECONNRESET");
  }, 10_000);

  it("takes a FIN inside a request body for a cut: its reader gets an error, the client an RST", async () => {
    const before = counts.get("http request body cut by the client") ?? 0;
    const finOutcomes = () => bodyOutcomes.filter((outcome) => outcome.startsWith("/echo-fin "));
    const result = await new Promise<{ text: string; error?: string }>((resolve) => {
      const socket = connect({ port, host: "127.0.0.1", allowHalfOpen: true });
      let text = "";
      const timer = setTimeout(() => resolve({ text, error: "still open" }), 1_500);
      socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")));
      socket.on("error", (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        resolve({ text, error: error.code });
      });
      socket.on("close", () => {
        clearTimeout(timer);
        resolve({ text });
      });
      socket.end("POST /echo-fin HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc");
    });
    expect(result.error).toBe("ECONNRESET");
    expect((counts.get("http request body cut by the client") ?? 0) - before).toBe(1);
    for (let i = 0; i < 50 && finOutcomes().length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(finOutcomes()).toEqual(["/echo-fin body error ECONNRESET"]);
  });

  it("cuts a client that reads none of its answer, and not one that reads it for longer than the deadline", async () => {
    const before = counts.get("http answer not read by the client") ?? 0;
    const bigEndings = () => endings.filter((ending) => ending.startsWith("/big "));
    const ended = bigEndings().length;
    // Asks for 64 MiB and reads nothing: the answer stops at the socket's buffers, and is cut.
    const idle = connect(port, "127.0.0.1");
    idle.on("error", () => undefined);
    idle.pause();
    idle.write("GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
    for (let i = 0; i < 150 && bigEndings().length === ended; i++) await new Promise((resolve) => setTimeout(resolve, 40));
    idle.destroy();
    expect(bigEndings().slice(ended)).toEqual(["/big closed early"]);
    expect((counts.get("http answer not read by the client") ?? 0) - before).toBe(1);
    // One that reads all the time, a piece every few milliseconds, for longer than the deadline: served whole
    // (the deadline counts from the last write, and each drain lets one more go).
    const started = Date.now();
    const slow = await new Promise<number>((resolve, reject) => {
      const socket = connect(port, "127.0.0.1");
      let received = 0;
      socket.on("data", (chunk: Buffer) => {
        received += chunk.length;
        socket.pause();
        setTimeout(() => socket.resume(), 5);
      });
      socket.on("error", reject);
      socket.on("close", () => resolve(received));
      socket.write("GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    });
    expect(slow).toBeGreaterThan(64 * 1024 * 1024);
    expect(Date.now() - started).toBeGreaterThan(1_500);
  }, 30_000);

  it("tells the handler when its client leaves mid-answer", async () => {
    const holdEndings = () => endings.filter((ending) => ending.startsWith("/hold "));
    const before = holdEndings().length;
    const socket = connect(port, "127.0.0.1");
    socket.on("error", () => undefined);
    socket.write("GET /hold HTTP/1.1\r\nHost: a\r\n\r\n");
    await new Promise((resolve) => setTimeout(resolve, 100));
    socket.resetAndDestroy();
    for (let i = 0; i < 50 && holdEndings().length === before; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(holdEndings().slice(before)).toEqual(["/hold closed early"]);
  });

  it("survives a thousand malformed requests, each refused and its connection closed", async () => {
    const garbage = [
      () => randomBytes(1 + Math.floor(Math.random() * 200)),
      () => "GET / HTTP/9.9\r\nHost: a\r\n\r\n",
      () => "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
      () => "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      () => "GET /\0 HTTP/1.1\r\n\r\n",
      () => `GET / HTTP/1.1\r\nHost: a\r\n${"X: y\r\n".repeat(3000)}\r\n`,
    ];
    const results = [];
    for (let batch = 0; batch < 10; batch++) {
      results.push(...(await Promise.all(Array.from({ length: 100 }, (_, index) => raw(garbage[(batch * 100 + index) % garbage.length](), 3_000)))));
    }
    expect(results.every((result) => result.closed)).toBe(true);
    expect(results.filter((result) => /^HTTP\/1\.1 4\d\d /.test(result.text)).length).toBeGreaterThan(900);
    // And it still serves.
    expect((await raw("GET /len HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")).text).toContain("hello");
  }, 60_000);
});
