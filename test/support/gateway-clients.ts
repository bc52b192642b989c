/**
 * Clients of test/support/gateway-backends.ts's `grpc` and `live` backends
 * through a gateway: a gRPC-style call over h2c (prior knowledge) that sends
 * its messages one at a time and reads each answer before the next, with the
 * answer's headers and trailers; and a WebSocket session (the `ws` client, so
 * that Host can be the route's name) that sends messages and reads their
 * echoes. Run in-process, or as a program in a lab namespace, printing JSON:
 * `node test/support/gateway-clients.ts grpc|ws URL HOST MESSAGE...`.
 *
 * ```ts
 * const call = await grpcCall("http://127.0.0.1:8080", "grpc.example.com", ["a", "b"]);
 * // { status: 200, backend: "grpc-b", answers: ["grpc-b:a", "b"], grpcStatus: "0", ending: "end" }
 * ```
 */
import { connect } from "node:http2";
import { ws } from "./ws.ts";

export interface GrpcCall {
  status: number;
  backend: string;
  /** What came back after each message sent (the first with the backend's name before it). */
  answers: string[];
  grpcStatus: string | undefined;
  ending: string;
}

/** One call: each message sent after the answer to the one before it came, then the end. */
export async function grpcCall(url: string, host: string, messages: string[], timeoutMs = 20_000): Promise<GrpcCall> {
  const session = connect(url);
  session.on("error", () => undefined);
  try {
    const stream = session.request({ ":method": "POST", ":path": "/shop.Orders/Chat", ":authority": host, "content-type": "application/grpc", te: "trailers" });
    const result: GrpcCall = { status: 0, backend: "", answers: [], grpcStatus: undefined, ending: "" };
    stream.on("response", (headers) => {
      result.status = Number(headers[":status"]);
      result.backend = String(headers["x-backend"] ?? "");
    });
    stream.on("trailers", (trailers) => (result.grpcStatus = trailers["grpc-status"] as string | undefined));
    let next = 0;
    const sendNext = () => (next < messages.length ? stream.write(messages[next++]) : stream.end());
    stream.on("data", (chunk: Buffer) => {
      result.answers.push(chunk.toString());
      if (result.answers.join("").endsWith(messages[next - 1] ?? "\u0000")) sendNext();
    });
    sendNext();
    result.ending = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve("timed out"), timeoutMs);
      stream.on("end", () => (clearTimeout(timer), resolve("end")));
      stream.on("error", (error: Error) => (clearTimeout(timer), resolve(`error: ${error.message}`)));
    });
    // Answers split or joined by the way: what counts is that every message came back, in order.
    result.answers = [result.answers.join("")];
    return result;
  } finally {
    session.close();
  }
}

/** A WebSocket session: what the server said first, then the echo of each message, then a clean close. */
export async function webSocketSession(url: string, host: string, messages: string[], timeoutMs = 20_000): Promise<{ received: string[]; closeCode: number | string }> {
  const client = new ws.WebSocket(url, { headers: { host } });
  const received: string[] = [];
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ received, closeCode: "timed out" }), timeoutMs);
    client.on("error", (error) => (clearTimeout(timer), resolve({ received, closeCode: `error: ${(error as Error).message}` })));
    client.on("message", (data) => {
      received.push(data.toString());
      const sent = received.length - 1;
      if (sent < messages.length) client.send(messages[sent]);
      else client.close(1000);
    });
    client.on("close", (code) => (clearTimeout(timer), resolve({ received, closeCode: code as number })));
  });
}

// As a program (in a lab namespace): one call or session, its result as JSON.
if (process.argv[1]?.endsWith("gateway-clients.ts") && process.argv.length >= 5) {
  const [kind, url, host, ...messages] = process.argv.slice(2);
  const result = kind === "grpc" ? await grpcCall(url, host, messages) : await webSocketSession(url, host, messages);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
