/** A nats-server's lines in our log (nats/server-lines.ts): levels, repeats said once a minute, explanations. */
import { Writable } from "node:stream";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { duplicateNodeExplainer } from "../trust/denials.ts";
import { ServerLines } from "./server-lines.ts";

function capture() {
  const lines: { level: number; msg: string; repeatsSinceLastSaid?: number }[] = [];
  const log = pino({ level: "info" }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString())), done()) }));
  return { log, lines };
}

const serverLine = (level: string, text: string) => `[812] 2026/12/06 18:22:27.505124 [${level}] ${text}`;

describe("a nats-server's lines", () => {
  it("says a line that repeats with new connection ids once a minute, with how often it came, and keeps every line for crash reports", () => {
    const { log, lines } = capture();
    let now = 0;
    const server = new ServerLines({ name: "edge-b", log, startingUp: () => false, now: () => now });
    // A refused login, retried every second for three minutes.
    for (let second = 0; second < 180; second++) {
      now = second * 1_000;
      server.forward(serverLine("ERR", `127.0.0.1:7422 - lid:${19 + second} - Leafnode Error 'Authorization Violation'`));
    }
    expect(lines.map((line) => line.msg)).toEqual([
      "127.0.0.1:7422 - lid:19 - Leafnode Error 'Authorization Violation'",
      "127.0.0.1:7422 - lid:79 - Leafnode Error 'Authorization Violation' (and 59 more like it since this was last said)",
      "127.0.0.1:7422 - lid:139 - Leafnode Error 'Authorization Violation' (and 59 more like it since this was last said)",
    ]);
    expect(lines.every((line) => line.level === 50)).toBe(true);
    expect(lines[1].repeatsSinceLastSaid).toBe(59);
    expect(server.recent).toHaveLength(50);
    expect(server.recent.at(-1)).toContain("lid:198");
    // Another line is said at once; an INF line and a probe's EOF stay at debug.
    server.forward(serverLine("WRN", "JetStream is running low on disk space"));
    server.forward(serverLine("INF", "Leafnode connection created"));
    server.forward(serverLine("ERR", "127.0.0.1:51234 - lid:400 - TLS leafnode handshake error: EOF"));
    expect(lines.slice(3).map((line) => [line.level, line.msg])).toEqual([[40, "JetStream is running low on disk space"]]);
  });

  it("takes a line from a new port, or of a new dial attempt, for a repeat (a refused route, every second)", () => {
    const { log, lines } = capture();
    let now = 0;
    const server = new ServerLines({ name: "hub-3", log, startingUp: () => false, now: () => now });
    for (let second = 0; second < 61; second++) {
      now = second * 1_000;
      server.forward(serverLine("ERR", `198.18.222.11:${50_000 + second} - rid:${19 + second} - TLS route handshake error: remote error: tls: bad certificate`));
      server.forward(serverLine("ERR", `Error trying to connect to route (attempt ${second + 1}): dial tcp 198.18.222.13:6222: connect: connection refused`));
    }
    expect(lines.map((line) => line.msg)).toEqual([
      "198.18.222.11:50000 - rid:19 - TLS route handshake error: remote error: tls: bad certificate",
      "Error trying to connect to route (attempt 1): dial tcp 198.18.222.13:6222: connect: connection refused",
      "198.18.222.11:50060 - rid:79 - TLS route handshake error: remote error: tls: bad certificate (and 59 more like it since this was last said)",
      "Error trying to connect to route (attempt 61): dial tcp 198.18.222.13:6222: connect: connection refused (and 59 more like it since this was last said)",
    ]);
    // Another far side is another line.
    server.forward(serverLine("ERR", "198.18.222.12:40278 - rid:500 - TLS route handshake error: remote error: tls: bad certificate"));
    expect(lines).toHaveLength(5);
  });

  it("lets an explainer count every line, the repeats it does not say too", () => {
    const { log, lines } = capture();
    let now = 0;
    const duplicate = duplicateNodeExplainer("edge-b", () => now);
    const server = new ServerLines({
      name: "edge-b",
      log,
      startingUp: () => false,
      now: () => now,
      explainLine: (line) => {
        const text = duplicate(line);
        return text ? { kind: "duplicate", text } : undefined;
      },
    });
    for (let second = 0; second < 3; second++) {
      now = second * 1_000;
      server.forward(serverLine("ERR", `127.0.0.1:7422 - lid:${second} - Leafnode Error 'Duplicate Remote LeafNode Connection'`));
    }
    expect(lines.map((line) => line.msg)).toEqual([
      "127.0.0.1:7422 - lid:0 - Leafnode Error 'Duplicate Remote LeafNode Connection'",
      expect.stringMatching(/^another machine runs as node 'edge-b'/),
    ]);
  });

  it("keeps its own readiness polls at debug while the server starts, and says them once it runs", () => {
    const { log, lines } = capture();
    let starting = true;
    const server = new ServerLines({ name: "hub-1", log, startingUp: () => starting });
    server.forward(serverLine("WRN", "Healthcheck failed: JetStream not current"));
    expect(lines).toEqual([]);
    starting = false;
    server.forward(serverLine("WRN", "Healthcheck failed: JetStream not current"));
    expect(lines.map((line) => line.msg)).toEqual(["Healthcheck failed: JetStream not current"]);
  });
});
