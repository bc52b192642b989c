/**
 * The gateway's HTTP/1.1 response parser against the framings a backend may use
 * (RFC 9112 §6.3): length, chunks with extensions and trailers, until the close,
 * none (HEAD, 204, 304), interim 1xx answers; fed whole and split at every byte;
 * and what it refuses.
 */
import { describe, expect, it } from "vitest";
import { HttpParseError, requestHead, ResponseParser, type ResponseHead } from "./http1-codec.ts";

interface Parsed {
  heads: ResponseHead[];
  body: string;
  ends: number[];
  trailers?: string[];
}

function parse(wire: string, options: { head?: boolean; split?: number } = {}): { parsed: Parsed; parser: ResponseParser } {
  const parsed: Parsed = { heads: [], body: "", ends: [] };
  const parser = new ResponseParser({
    head: options.head ?? false,
    onHead: (head) => parsed.heads.push(head),
    onBody: (chunk) => (parsed.body += chunk.toString("latin1")),
    onEnd: (extra, trailers) => {
      parsed.ends.push(extra);
      parsed.trailers = trailers;
    },
  });
  const bytes = Buffer.from(wire, "latin1");
  const step = options.split ?? bytes.length;
  for (let at = 0; at < bytes.length; at += step) parser.feed(bytes.subarray(at, at + step));
  return { parsed, parser };
}

const framings: { name: string; wire: string; body: string; keepAlive: boolean; head?: boolean }[] = [
  { name: "content-length", wire: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello", body: "hello", keepAlive: true },
  { name: "chunks with an extension and trailers", wire: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n", body: "hello!", keepAlive: true },
  { name: "an interim 100 Continue first", wire: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", body: "ok", keepAlive: true },
  { name: "204 without a body", wire: "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", body: "", keepAlive: true },
  { name: "a HEAD answer with a length but no body", wire: "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", body: "", keepAlive: true, head: true },
  { name: "Connection: close", wire: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", body: "ok", keepAlive: false },
  { name: "HTTP/1.0 without keep-alive", wire: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", body: "ok", keepAlive: false },
  { name: "HTTP/1.0 with keep-alive", wire: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", body: "ok", keepAlive: true },
];

describe("the gateway's HTTP/1.1 response parser", () => {
  for (const framing of framings) {
    it(`reads ${framing.name}, whole and split at every byte`, () => {
      for (const split of [undefined, 1, 3]) {
        const { parsed, parser } = parse(framing.wire, { head: framing.head, split });
        expect(parsed.heads).toHaveLength(1);
        expect(parsed.heads[0].keepAlive).toBe(framing.keepAlive);
        expect(parsed.body).toBe(framing.body);
        expect(parsed.ends).toEqual([0]);
        expect(parser.done).toBe(true);
      }
    });
  }

  it("gives a chunked answer's trailer section with its end, as sent (a line without a colon under the name ''), whole and split at every byte", () => {
    for (const split of [undefined, 1, 3]) {
      const { parsed } = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Digest:  abc \r\ngrpc-status: 0\r\nno colon\r\n\r\n", { split });
      expect(parsed.trailers).toEqual(["X-Digest", "abc", "grpc-status", "0", "", "no colon"]);
      expect(parsed.ends).toEqual([0]);
    }
    expect(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").parsed.trailers).toBeUndefined();
    // Bounded as a head is: a backend cannot make the gateway hold an endless trailer section.
    expect(() => parse(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n${"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(600)}\r\n`)).toThrow(/trailer section longer/);
    expect(() => parse(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Long: ${"a".repeat(40_000)}`)).toThrow(/trailer line too long/);
  });

  it("keeps header names as sent, duplicates in order", () => {
    const { parsed } = parse("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Thing:  spaced \r\nContent-Length: 0\r\n\r\n");
    expect(parsed.heads[0]).toEqual({ status: 200, headers: ["Set-Cookie", "a=1", "set-cookie", "b=2", "X-Thing", "spaced", "Content-Length", "0"], keepAlive: true });
  });

  it("reads a body without length or chunks until the close, and never reuses its connection", () => {
    const { parsed, parser } = parse("HTTP/1.1 200 OK\r\n\r\nall of it");
    expect(parsed.heads[0].keepAlive).toBe(false);
    expect(parsed.ends).toEqual([]);
    expect(parser.finishOnEof()).toBe(true);
    expect(parsed.body).toBe("all of it");
    expect(parsed.ends).toEqual([0]);
  });

  it("takes an end before the length was read as a cut", () => {
    const { parsed, parser } = parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
    expect(parser.finishOnEof()).toBe(false);
    expect(parsed.ends).toEqual([]);
  });

  it("says how many bytes came after the answer (a backend out of step)", () => {
    expect(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA").parsed.ends).toEqual([5]);
    expect(parse("HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1").parsed.ends).toEqual([8]);
  });

  it("refuses malformed answers with a reason", () => {
    const bad = [
      "SSH-2.0-OpenSSH\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n",
      "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
      "HTTP/1.1 200 OK\r\n folded: value\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokNOTCRLF",
      "HTTP/1.1 101 Switching Protocols\r\n\r\n",
      `HTTP/1.1 200 OK\r\nX: ${"a".repeat(40_000)}`,
    ];
    for (const wire of bad) expect(() => parse(wire), wire.slice(0, 40)).toThrow(HttpParseError);
  });

  it("writes a request head", () => {
    expect(requestHead("GET", "/a?b=1", ["Host", "x.example", "x-forwarded-for", "1.2.3.4"])).toBe("GET /a?b=1 HTTP/1.1\r\nHost: x.example\r\nx-forwarded-for: 1.2.3.4\r\n\r\n");
  });
});
