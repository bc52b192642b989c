/**
 * SOCKS5 (RFC 1928) wire format, pure: parse the greeting and the request from
 * whatever bytes have arrived (saying how many more are needed), and build
 * replies. Only CONNECT and "no authentication" are offered: the proxy listens
 * on the node's loopback or link-local address, for its operators.
 */
export const socksVersion = 5;

/** RFC 1928 §6 reply codes. */
export const replyCodes = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowed: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;

export type ParseResult<T> = { status: "need"; bytes: number } | { status: "ok"; value: T; length: number } | { status: "error"; reason: string; reply?: number };

/** VER NMETHODS METHODS… */
export function parseGreeting(buffer: Uint8Array): ParseResult<{ methods: number[] }> {
  if (buffer.length < 2) return { status: "need", bytes: 2 - buffer.length };
  if (buffer[0] !== socksVersion) return { status: "error", reason: `not SOCKS5 (version byte ${buffer[0]})` };
  const count = buffer[1];
  if (count === 0) return { status: "error", reason: "no authentication methods offered" };
  if (buffer.length < 2 + count) return { status: "need", bytes: 2 + count - buffer.length };
  return { status: "ok", value: { methods: [...buffer.subarray(2, 2 + count)] }, length: 2 + count };
}

export interface SocksRequest {
  command: number;
  host: string;
  port: number;
}

/** VER CMD RSV ATYP DST.ADDR DST.PORT */
export function parseRequest(buffer: Uint8Array): ParseResult<SocksRequest> {
  if (buffer.length < 5) return { status: "need", bytes: 5 - buffer.length };
  if (buffer[0] !== socksVersion) return { status: "error", reason: `not SOCKS5 (version byte ${buffer[0]})`, reply: replyCodes.generalFailure };
  const command = buffer[1];
  const addressType = buffer[3];
  let addressLength: number;
  let offset = 4;
  if (addressType === 0x01) addressLength = 4;
  else if (addressType === 0x04) addressLength = 16;
  else if (addressType === 0x03) {
    addressLength = buffer[4];
    offset = 5;
    if (addressLength === 0) return { status: "error", reason: "empty host name", reply: replyCodes.generalFailure };
  } else return { status: "error", reason: `address type ${addressType} not supported`, reply: replyCodes.addressTypeNotSupported };
  const total = offset + addressLength + 2;
  if (buffer.length < total) return { status: "need", bytes: total - buffer.length };
  const address = buffer.subarray(offset, offset + addressLength);
  let host: string;
  if (addressType === 0x01) host = [...address].join(".");
  else if (addressType === 0x04) host = Array.from({ length: 8 }, (_, index) => ((address[index * 2] << 8) | address[index * 2 + 1]).toString(16)).join(":");
  else {
    host = new TextDecoder().decode(address);
    if (!/^[\x21-\x7e]+$/.test(host)) return { status: "error", reason: "host name is not printable ASCII", reply: replyCodes.generalFailure };
  }
  const port = (buffer[offset + addressLength] << 8) | buffer[offset + addressLength + 1];
  if (command !== 0x01) return { status: "error", reason: `command ${command} not supported (only CONNECT)`, reply: replyCodes.commandNotSupported };
  return { status: "ok", value: { command, host, port }, length: total };
}

/** VER REP RSV ATYP=IPv4 0.0.0.0:0 — the bound address is not meaningful through a mesh. */
export function buildReply(code: number): Uint8Array {
  return Uint8Array.of(socksVersion, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0);
}

/** VER METHOD: 0x00 (no authentication), or 0xff (none acceptable). */
export function buildMethodChoice(methods: number[]): Uint8Array {
  return Uint8Array.of(socksVersion, methods.includes(0x00) ? 0x00 : 0xff);
}
