/**
 * Reads what a TLS client asks for before any TLS is spoken: the server name
 * (SNI) and the application protocols (ALPN) of its ClientHello (RFC 8446
 * §4.1.2, RFC 6066 §3, RFC 7301 §3.1), from the bytes the client sent so far.
 * The gateway picks a route by SNI with it: passed through as the bytes came,
 * or terminated. Pure, and total: any input gives an answer, never an
 * exception (the bytes are a stranger's).
 *
 * ```ts
 * const hello = parseClientHello(buffered);
 * if (hello.status === "incomplete") readMore();          // parse again once hello.needed bytes are there
 * else if (hello.status === "ok") route(hello.serverName, hello.alpn);
 * else refuse(hello.reason);                              // not TLS, or a malformed hello
 * ```
 */

export type ClientHelloResult =
  | { status: "ok"; serverName?: string; alpn: string[]; /** bytes of the records that held the hello */ length: number }
  | { status: "incomplete"; /** Parsing again before this many bytes are there cannot tell more. */ needed: number }
  | { status: "invalid"; reason: string };

/** The longest ClientHello read: a hello with post-quantum key shares is ~2 KiB; 16 KiB (one record) is generous. */
export const maxClientHelloBytes = 16 * 1024;

/** A real hello takes one record, rarely two or three; more is a client making the parse costly. */
const maxRecords = 8;
const handshakeRecord = 22;
const clientHelloType = 1;

export function parseClientHello(bytes: Uint8Array): ClientHelloResult {
  // The handshake message may span several records: gather their payloads until it is whole.
  const payload: number[] = [];
  let offset = 0;
  let helloLength = -1;
  let records = 0;
  while (helloLength < 0 || payload.length < helloLength) {
    if (++records > maxRecords) return { status: "invalid", reason: `a ClientHello in more than ${maxRecords} records` };
    if (bytes.length < offset + 5) return { status: "incomplete", needed: offset + 5 };
    if (bytes[offset] !== handshakeRecord) return { status: "invalid", reason: offset === 0 ? "not TLS (the first record is no handshake)" : "a record inside the hello is no handshake" };
    if (bytes[offset + 1] !== 3) return { status: "invalid", reason: "not TLS (bad record version)" };
    const recordLength = (bytes[offset + 3] << 8) | bytes[offset + 4];
    if (recordLength === 0 || recordLength > 16_384) return { status: "invalid", reason: "a record of bad length" };
    if (bytes.length < offset + 5 + recordLength) return { status: "incomplete", needed: offset + 5 + recordLength };
    for (let i = 0; i < recordLength; i++) payload.push(bytes[offset + 5 + i]);
    offset += 5 + recordLength;
    if (helloLength < 0 && payload.length >= 4) {
      if (payload[0] !== clientHelloType) return { status: "invalid", reason: "the first handshake message is no ClientHello" };
      helloLength = 4 + ((payload[1] << 16) | (payload[2] << 8) | payload[3]);
      if (helloLength > maxClientHelloBytes) return { status: "invalid", reason: `a ClientHello longer than ${maxClientHelloBytes} bytes` };
    }
  }
  const hello = parseHelloBody(Uint8Array.from(payload.slice(4, helloLength)));
  return "reason" in hello ? { status: "invalid", reason: hello.reason } : { status: "ok", ...hello, length: offset };
}

function parseHelloBody(body: Uint8Array): { serverName?: string; alpn: string[] } | { reason: string } {
  let at = 0;
  const take = (count: number): number | undefined => {
    if (at + count > body.length) return undefined;
    const start = at;
    at += count;
    return start;
  };
  const u8 = () => {
    const start = take(1);
    return start === undefined ? undefined : body[start];
  };
  const u16 = () => {
    const start = take(2);
    return start === undefined ? undefined : (body[start] << 8) | body[start + 1];
  };
  // legacy_version, random
  if (take(2 + 32) === undefined) return { reason: "a truncated ClientHello" };
  const sessionId = u8();
  if (sessionId === undefined || sessionId > 32 || take(sessionId) === undefined) return { reason: "a bad session id" };
  const suites = u16();
  if (suites === undefined || suites % 2 !== 0 || take(suites) === undefined) return { reason: "bad cipher suites" };
  const compression = u8();
  if (compression === undefined || take(compression) === undefined) return { reason: "bad compression methods" };
  // A hello without extensions (SSL 3 style) names no server.
  if (at === body.length) return { alpn: [] };
  const extensionsLength = u16();
  if (extensionsLength === undefined || at + extensionsLength > body.length) return { reason: "bad extensions length" };
  const end = at + extensionsLength;
  let serverName: string | undefined;
  let alpn: string[] = [];
  while (at < end) {
    const type = u16();
    const length = u16();
    if (type === undefined || length === undefined || at + length > end) return { reason: "a truncated extension" };
    const data = body.subarray(at, at + length);
    at += length;
    if (type === 0) {
      const name = readServerName(data);
      if (typeof name === "object") return name;
      serverName = name;
    } else if (type === 16) {
      const protocols = readAlpn(data);
      if (!Array.isArray(protocols)) return protocols;
      alpn = protocols;
    }
  }
  return { ...(serverName !== undefined ? { serverName } : {}), alpn };
}

/** server_name: a list of (type, name); type 0 is a host name (RFC 6066 §3). */
function readServerName(data: Uint8Array): string | undefined | { reason: string } {
  if (data.length < 2) return { reason: "a bad server_name extension" };
  const listLength = (data[0] << 8) | data[1];
  if (listLength + 2 !== data.length) return { reason: "a bad server_name list" };
  let at = 2;
  while (at + 3 <= data.length) {
    const type = data[at];
    const length = (data[at + 1] << 8) | data[at + 2];
    at += 3;
    if (at + length > data.length) return { reason: "a truncated server name" };
    if (type === 0) {
      const name = data.subarray(at, at + length);
      // A host name is ASCII letters, digits, '-', '.' (and '_' seen in the field); anything else is refused.
      for (const byte of name) if (!(byte === 45 || byte === 46 || byte === 95 || (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122))) return { reason: "a server name that is no host name" };
      if (length === 0 || length > 253) return { reason: "a server name of bad length" };
      return Buffer.from(name).toString("ascii").toLowerCase().replace(/\.$/, "");
    }
    at += length;
  }
  return undefined;
}

/** application_layer_protocol_negotiation: a list of length-prefixed protocol names (RFC 7301 §3.1). */
function readAlpn(data: Uint8Array): string[] | { reason: string } {
  if (data.length < 2) return { reason: "a bad ALPN extension" };
  const listLength = (data[0] << 8) | data[1];
  if (listLength + 2 !== data.length) return { reason: "a bad ALPN list" };
  const protocols: string[] = [];
  let at = 2;
  while (at < data.length) {
    const length = data[at];
    at += 1;
    if (length === 0 || at + length > data.length) return { reason: "a bad ALPN protocol name" };
    protocols.push(Buffer.from(data.subarray(at, at + length)).toString("latin1"));
    at += length;
  }
  return protocols;
}
