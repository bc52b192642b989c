import { createServer, type AddressInfo } from "node:net";
import { connect } from "node:tls";
import { beforeAll, describe, expect, it } from "vitest";
import { parseClientHello } from "./client-hello.ts";

/** The first bytes a real Node TLS client sends: its ClientHello. */
async function captureHello(options: { servername?: string; ALPNProtocols?: string[]; minVersion?: "TLSv1.2" | "TLSv1.3"; maxVersion?: "TLSv1.2" | "TLSv1.3" }): Promise<Buffer> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      server.once("connection", (socket) => {
        let received = Buffer.alloc(0);
        socket.on("data", (chunk: Buffer) => {
          received = Buffer.concat([received, chunk]);
          const result = parseClientHello(received);
          if (result.status !== "incomplete") {
            socket.destroy();
            resolve(received);
          }
        });
      });
      const client = connect({ host: "127.0.0.1", port, rejectUnauthorized: false, ...options });
      client.on("error", () => undefined);
      setTimeout(() => reject(new Error("no hello")), 5_000).unref();
    });
  } finally {
    server.close();
  }
}

/** The same hello split into records of `size` bytes of handshake payload each (RFC 8446 §5.1 allows it). */
function fragment(hello: Buffer, size: number): Buffer {
  const payload = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const records: Buffer[] = [];
  for (let at = 0; at < payload.length; at += size) {
    const part = payload.subarray(at, at + size);
    const header = Buffer.from([22, 3, 1, 0, 0]);
    header.writeUInt16BE(part.length, 3);
    records.push(header, part);
  }
  return Buffer.concat(records);
}

describe("parseClientHello", () => {
  const hellos: { name: string; servername?: string; alpn: string[]; bytes?: Buffer; options: Parameters<typeof captureHello>[0] }[] = [
    { name: "TLS 1.3 with SNI and h2", servername: "shop.example.com", alpn: ["h2", "http/1.1"], options: { servername: "shop.example.com", ALPNProtocols: ["h2", "http/1.1"] } },
    { name: "TLS 1.2 with SNI", servername: "pass.example.com", alpn: [], options: { servername: "pass.example.com", maxVersion: "TLSv1.2" } },
    { name: "without SNI (an IP)", alpn: ["http/1.1"], options: { servername: "", ALPNProtocols: ["http/1.1"] } },
    { name: "a long name", servername: `${"a".repeat(60)}.${"b".repeat(60)}.example.com`, alpn: ["h2"], options: { servername: `${"a".repeat(60)}.${"b".repeat(60)}.example.com`, ALPNProtocols: ["h2"] } },
  ];

  beforeAll(async () => {
    for (const hello of hellos) hello.bytes = await captureHello(hello.options);
  });

  it("reads the server name and the protocols of real hellos", () => {
    for (const hello of hellos) {
      const result = parseClientHello(hello.bytes!);
      expect(result, hello.name).toMatchObject({ status: "ok", alpn: hello.alpn, length: hello.bytes!.length });
      expect(result.status === "ok" && result.serverName, hello.name).toBe(hello.servername ?? undefined);
    }
  });

  it("says incomplete for every prefix of a hello, and how many bytes it needs before trying again", () => {
    for (const hello of hellos) {
      const bytes = hello.bytes!;
      for (let length = 0; length < bytes.length; length++) {
        const result = parseClientHello(bytes.subarray(0, length));
        expect(result.status, `${hello.name}, ${length} bytes`).toBe("incomplete");
        if (result.status === "incomplete") expect(result.needed).toBeGreaterThan(length);
      }
    }
  });

  it("reads a hello split over several records, and refuses one split too finely", () => {
    const bytes = hellos[0].bytes!;
    for (const size of [64, 100, 200, 511]) {
      const split = fragment(bytes, size);
      const records = Math.ceil((bytes.length - 5) / size);
      const result = parseClientHello(split);
      if (records <= 8) expect(result, `records of ${size}`).toMatchObject({ status: "ok", serverName: "shop.example.com", alpn: ["h2", "http/1.1"] });
      else expect(result, `records of ${size}`).toMatchObject({ status: "invalid" });
    }
    expect(parseClientHello(fragment(bytes, 4))).toMatchObject({ status: "invalid", reason: expect.stringMatching(/more than 8 records/) });
  });

  it("refuses what is not TLS", () => {
    for (const text of ["GET / HTTP/1.1\r\nHost: a\r\n\r\n", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "SSH-2.0-OpenSSH_9.6\r\n"]) {
      expect(parseClientHello(Buffer.from(text))).toMatchObject({ status: "invalid", reason: expect.stringMatching(/not TLS/) });
    }
    expect(parseClientHello(Buffer.from([22, 3, 1, 0, 0]))).toMatchObject({ status: "invalid" });
    expect(parseClientHello(Buffer.from([22, 3, 1, 0, 5, 2, 0, 0, 1, 0]))).toMatchObject({ status: "invalid", reason: expect.stringMatching(/no ClientHello/) });
  });

  it("never throws on a hello with any byte changed, and on random bytes after a handshake header", () => {
    let seed = 7;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff) / 0x7fffffff);
    for (const hello of hellos) {
      const bytes = hello.bytes!;
      for (let index = 0; index < bytes.length; index++) {
        const changed = Buffer.from(bytes);
        changed[index] = Math.floor(random() * 256);
        const result = parseClientHello(changed);
        expect(["ok", "incomplete", "invalid"]).toContain(result.status);
        if (result.status === "ok" && result.serverName !== undefined) expect(result.serverName).toMatch(/^[a-z0-9._-]+$/);
      }
    }
    for (let round = 0; round < 500; round++) {
      const length = 5 + Math.floor(random() * 600);
      const bytes = Buffer.alloc(length);
      for (let i = 0; i < length; i++) bytes[i] = Math.floor(random() * 256);
      bytes[0] = 22;
      bytes[1] = 3;
      bytes[5] = 1;
      expect(["ok", "incomplete", "invalid"]).toContain(parseClientHello(bytes).status);
    }
  });

  it("refuses a hello that announces more than it may", () => {
    const header = Buffer.from([22, 3, 1, 0x40, 0x00, 1, 0x01, 0x00, 0x00]);
    expect(parseClientHello(Buffer.concat([header, Buffer.alloc(0x4000 - 4)]))).toMatchObject({ status: "invalid", reason: expect.stringMatching(/longer than/) });
  });
});

