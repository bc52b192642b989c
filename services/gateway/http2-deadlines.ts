/**
 * Deadlines that Node's HTTP/2 server does not keep (its timeout is off by default): a session that opened and
 * went quiet (a bare preface, half a header block, an idle client) and a request body that stopped halfway each
 * held their connection for ever. Each closing is counted by its reason.
 */
import { constants, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import { answerStallMs } from "./stalled-reader.ts";

export interface Http2Deadlines {
  count: (reason: string) => void;
  /**
   * @default 60_000 — a session with no stream open and no frame for this long is closed (GOAWAY): nginx keeps
   * an idle one about as long (keepalive_timeout 75 s).
   */
  idleMs?: number;
  /** @default 300_000 — a request whose body stops (no frame on its stream) this long is reset, as HTTP/1's body deadline (http1-server.ts). */
  requestMs?: number;
  /** @default 300_000 (stalled-reader.ts) — an answer its client takes none of (no WINDOW_UPDATE) this long is reset. */
  answerStallMs?: number;
}

export function boundHttp2Session(session: ServerHttp2Session, deadlines: Http2Deadlines): void {
  const { count } = deadlines;
  let open = 0;
  session.on("stream", (stream: ServerHttp2Stream) => {
    open++;
    stream.once("close", () => open--);
    // Fires after this long without a frame on the stream: a request body that stopped, or an answer whose client
    // opens no window for it. A request whose body ended with nothing owed waits on its backend, not on its client.
    stream.setTimeout(Math.min(deadlines.requestMs ?? 300_000, deadlines.answerStallMs ?? answerStallMs), () => {
      if (stream.destroyed || stream.closed) return;
      if (stream.state.state !== constants.NGHTTP2_STREAM_STATE_HALF_CLOSED_REMOTE) {
        count("http2 request body timed out");
        return void stream.close(constants.NGHTTP2_CANCEL);
      }
      if (stream.writableLength === 0) return;
      count("http answer not read by the client");
      stream.close(constants.NGHTTP2_CANCEL);
    });
  });
  // Fires after this long without a frame on the session; one with streams open is theirs to bound.
  session.setTimeout(deadlines.idleMs ?? 60_000, () => {
    if (open > 0 || session.destroyed) return;
    count("http2 session idle");
    session.close();
    // A client that never finished its preface or a header block may hold close() up: destroyed after a grace.
    setTimeout(() => session.destroy(), 1_000).unref();
  });
}
