/**
 * A backend's trailers (gRPC's grpc-status, a digest after a streamed body)
 * passed on to the client, for HTTP/2 backends (their trailing HEADERS) and
 * HTTP/1.1 ones (a chunked answer's trailer section, RFC 9112 §7.1.2) alike:
 * to an HTTP/2 client as trailing HEADERS, to an HTTP/1.1 client that said it
 * reads them (`TE: trailers`, RFC 9110 §10.1.4) in the chunked answer's last
 * chunk, to no other. Fields that frame, route, authenticate or describe a
 * message have no place in trailers (RFC 9110 §6.5.1), nor hop-by-hop ones.
 *
 * ```ts
 * passTrailers(request, response, ["grpc-status", "0"], count); // before response.end()
 * ```
 */
import type { ServerResponse } from "node:http";
import type { Http2ServerResponse } from "node:http2";
import { _checkInvalidHeaderChar as badValue, _checkIsHttpToken as isToken } from "node:_http_common";
import { hopByHop, type GatewayRequest, type GatewayResponse } from "./http-message.ts";
import { Http1Response } from "./http1-messages.ts";

/**
 * Fields a trailer section may not carry (RFC 9110 §6.5.1): hop-by-hop ones, framing (Content-Length), routing
 * (Host, among hopByHop), authentication, the content's format, and controls of the response as a whole.
 */
const notInTrailers = new Set([
  ...hopByHop,
  "content-length",
  "content-type",
  "content-encoding",
  "content-range",
  "authorization",
  "proxy-authorization",
  "www-authenticate",
  "proxy-authenticate",
  "set-cookie",
  "cache-control",
  "expires",
  "location",
  "retry-after",
  "vary",
]);

/** Whether the client said it reads trailers (`TE: trailers`, RFC 9110 §10.1.4). */
export function readsTrailers(request: GatewayRequest): boolean {
  const te = request.headers.te;
  return typeof te === "string" && /(?:^|,)\s*trailers\s*(?:,|$)/i.test(te);
}

/**
 * Passes a backend's trailer fields ([name, value, …], pseudo-headers skipped) to the client when it reads them;
 * call it before the answer's end(). What is dropped is counted: fields not valid HTTP (Node's responses would throw
 * on them: thrown while an HTTP/2 stream sends its trailers, that ended the process), fields trailers may not carry,
 * and the whole section when the answer cannot carry it (it has a Content-Length, or its client speaks HTTP/1.0).
 */
export function passTrailers(request: GatewayRequest, response: GatewayResponse, raw: readonly string[], count: (reason: string) => void): void {
  if (raw.length === 0 || (request.httpVersionMajor !== 2 && !readsTrailers(request))) return;
  const fields: Record<string, string[]> = {};
  let kept = 0;
  let invalid = false;
  let forbidden = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (name.charCodeAt(0) === 58 /* ":" */) continue;
    if (name === "" || !isToken(name) || badValue(raw[i + 1])) invalid = true;
    else if (notInTrailers.has(name)) forbidden = true;
    else {
      (fields[name] ??= []).push(raw[i + 1]);
      kept++;
    }
  }
  if (invalid) count("http trailers dropped: a field not valid HTTP");
  if (forbidden) count("http trailers dropped: a field trailers may not carry");
  if (kept === 0) return;
  let carried = true;
  try {
    if (request.httpVersionMajor === 2) (response as Http2ServerResponse).addTrailers(fields);
    // The gateway's own HTTP/1.x front end says whether the answer has a place for them.
    else if (response instanceof Http1Response) carried = response.addTrailers(fields);
    else {
      // Node's (HTTP/1.x over TLS): its end() writes trailers only in a chunked answer's last chunk, and drops them
      // without a word otherwise. Its framing is fixed by writeHead (before this): a Content-Length, or HTTP/1.0.
      const node = response as ServerResponse;
      carried = node.chunkedEncoding;
      if (carried) node.addTrailers(fields);
    }
  } catch {
    // Checked above as Node checks them: a refusal here is one of Node's own, still no reason to end the process.
    return count("http trailers dropped: a field not valid HTTP");
  }
  if (!carried) count("http trailers dropped: the answer is not chunked");
}
