/**
 * One exchange with one upstream DNS server: our query over UDP, and over TCP when the UDP answer
 * is truncated (RFC 7766). Apart from the forwarder (forwarder.ts), which decides which upstream
 * to ask, caches and serves stale answers. A failure says what kind it is (`UpstreamFailure.label`:
 * timeout, refused, mismatch, closed, error), which the forwarder counts and logs by.
 *
 * ```ts
 * const bytes = await exchangeWithUpstream({ host: "192.0.2.53", port: 53 }, query, parsed, { clock, timeoutMs: 2_000 });
 * ```
 */
import { randomInt } from "node:crypto";
import { createSocket, type Socket } from "node:dgram";
import { connect, isIPv6 } from "node:net";
import type { Clock } from "../../lib/clock.ts";
import { flagRD, flagTC, qtypes, sameQuestion, serverUdpPayloadSize, walkResponse, type ParsedQuery } from "./wire.ts";

export interface Upstream {
  host: string;
  port: number;
}

export type UpstreamFailureLabel = "timeout" | "refused" | "mismatch" | "closed" | "error";

/** Why an exchange with an upstream gave no answer. */
export class UpstreamFailure extends Error {
  readonly label: UpstreamFailureLabel;

  constructor(label: UpstreamFailureLabel, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UpstreamFailure";
    this.label = label;
  }
}

function socketFailure(error: NodeJS.ErrnoException): UpstreamFailure {
  return new UpstreamFailure(error.code === "ECONNREFUSED" ? "refused" : "error", error.message, { cause: error });
}

/** One upstream exchange over UDP, and over TCP when the UDP answer is truncated. */
export async function exchangeWithUpstream(upstream: Upstream, query: Uint8Array, parsed: ParsedQuery, options: { clock: Clock; timeoutMs: number }): Promise<Buffer> {
  const id = randomInt(0, 0x10000);
  const upstreamQuery = buildUpstreamQuery(query, parsed, id);
  const response = await udpExchange(upstream, upstreamQuery, parsed, id, options);
  if (response.readUInt16BE(2) & flagTC) return tcpExchange(upstream, upstreamQuery, parsed, id, options);
  return response;
}

function udpExchange(upstream: Upstream, packet: Buffer, parsed: ParsedQuery, id: number, { clock, timeoutMs }: { clock: Clock; timeoutMs: number }): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const socket: Socket = createSocket(isIPv6(upstream.host) ? "udp6" : "udp4");
    let done = false;
    const finish = (error: Error | undefined, value?: Buffer) => {
      if (done) return;
      done = true;
      clock.clearTimeout(timer);
      socket.close();
      if (error) reject(error);
      else resolve(value!);
    };
    const timer = clock.setTimeout(() => finish(new UpstreamFailure("timeout", `timed out after ${timeoutMs} ms`)), timeoutMs);
    socket.on("error", (error) => finish(socketFailure(error)));
    socket.on("message", (message) => {
      // Anything but the answer to our id and question is ignored (a late or spoofed reply).
      if (message.length < 12 || message.readUInt16BE(0) !== id) return;
      const walked = walkResponse(message);
      if (!walked || !sameQuestion(message, walked.questionEnd, packet, parsed.questionEnd)) return;
      finish(undefined, message);
    });
    // A connected socket hears ICMP port unreachable as ECONNREFUSED: a dead upstream fails at once.
    socket.connect(upstream.port, upstream.host, () => socket.send(packet, (error) => error && finish(socketFailure(error))));
  });
}

function tcpExchange(upstream: Upstream, packet: Buffer, parsed: ParsedQuery, id: number, { clock, timeoutMs }: { clock: Clock; timeoutMs: number }): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const socket = connect({ host: upstream.host, port: upstream.port });
    let buffered = Buffer.alloc(0);
    let done = false;
    const finish = (error: Error | undefined, value?: Buffer) => {
      if (done) return;
      done = true;
      clock.clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(value!);
    };
    const timer = clock.setTimeout(() => finish(new UpstreamFailure("timeout", `timed out after ${timeoutMs} ms (tcp)`)), timeoutMs);
    socket.on("error", (error) => finish(socketFailure(error)));
    socket.on("connect", () => {
      const length = Buffer.allocUnsafe(2);
      length.writeUInt16BE(packet.length);
      socket.write(Buffer.concat([length, packet]));
    });
    socket.on("data", (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length < 2) return;
      const length = buffered.readUInt16BE(0);
      if (buffered.length < 2 + length) return;
      const message = buffered.subarray(2, 2 + length);
      const walked = walkResponse(message);
      if (message.length < 12 || message.readUInt16BE(0) !== id || !walked || !sameQuestion(message, walked.questionEnd, packet, parsed.questionEnd)) {
        finish(new UpstreamFailure("mismatch", "tcp response mismatch"));
        return;
      }
      finish(undefined, Buffer.from(message));
    });
    socket.on("end", () => finish(new UpstreamFailure("closed", "tcp connection closed before a response")));
  });
}

/**
 * Our query to an upstream: a fresh id, RD, the client's question and CD bit, and our own EDNS0 size
 * with the client's DO bit: a client that asks with DO (a validating stub or resolver in front of us)
 * wants the RRSIGs (RFC 3225 §3; as CoreDNS's forward and cache do), one without DO is not sent them.
 */
function buildUpstreamQuery(query: Uint8Array, parsed: ParsedQuery, id: number): Buffer {
  const questionLength = parsed.questionEnd - 12;
  const out = Buffer.alloc(12 + questionLength + 11);
  out.writeUInt16BE(id, 0);
  out.writeUInt16BE(flagRD | (parsed.flags & 0x0010), 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(1, 10);
  out.set(query.subarray(12, parsed.questionEnd), 12);
  const opt = 12 + questionLength;
  out[opt] = 0;
  out.writeUInt16BE(qtypes.OPT, opt + 1);
  out.writeUInt16BE(serverUdpPayloadSize, opt + 3);
  if (parsed.edns?.dnssecOk) out[opt + 7] = 0x80;
  return out;
}
