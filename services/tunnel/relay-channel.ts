/**
 * One relayed byte channel between two nodes: a Node Duplex whose bytes cross
 * NATS as relay frames (relay-frames.ts), opened and dispatched by the node's
 * relay endpoint (relay.ts). A carrier stream (carrier.ts): ordered, half-closing,
 * reset as an error at both ends, flow-controlled.
 *
 * What the channel itself guarantees:
 * - order: every frame carries a per-direction sequence number; a gap (a frame
 *   lost while a hub died) resets the channel — bytes are never silently dropped.
 * - flow control: the sender spends credit the receiver grants as its reader
 *   consumes, so a subscriber never holds more than its window per channel
 *   (`windowBytes`, grown on a long path: relay-window.ts), within the
 *   endpoint's budget for all channels (relay-budget.ts).
 * - liveness: idle channels exchange pings; silence longer than `idleTimeoutMs`
 *   resets the channel (a cut path loses frames without any error at the sender).
 * - an end is a FIN from the far side; anything else (a local destroy, a gap, a
 *   peer's reset, silence) is a reset that reaches the other end as an error.
 *
 * ```ts
 * const channel = await relay.open("edge-b");   // relay.ts
 * channel.end(bytes); channel.on("data", ...);  // a Duplex; destroy() resets
 * ```
 */
import { Duplex } from "node:stream";
import { LeafmeshError } from "../../lib/errors.ts";
import type { Clock } from "../../lib/clock.ts";
import type { CreditBudget } from "./relay-budget.ts";
import { ReceiveWindow } from "./relay-window.ts";
import {
  decodeAccept,
  decodeCredit,
  decodeOpen,
  defaultFrameBytes,
  encodeAccept,
  encodeCredit,
  encodeFrame,
  frameTypes,
  frameWithHeader,
  headerBytes,
  type FrameType,
  type RelayFrame,
  type RelayPurpose,
} from "./relay-frames.ts";

/** A channel opened or ended (for `mesh.<node>.tunnel.relay`). */
export interface RelayChannelEvent {
  peer: string;
  channel: string;
  status: "open" | "closed" | "reset";
  bytes: number;
  reason?: string;
}

/** What a channel needs of the endpoint that made it (relay.ts). */
export interface ChannelEndpoint {
  readonly settings: {
    clock: Clock;
    /** Credit granted per channel at first. */
    windowBytes: number;
    /** What a channel's window may grow to on a long path (relay-window.ts). */
    maxWindowBytes: number;
    pingIntervalMs: number;
    idleTimeoutMs: number;
    /** Payload bytes per NATS message; by purpose when undefined. */
    frameBytes?: number;
    onEvent?: (event: RelayChannelEvent) => void;
  };
  readonly budget: CreditBudget;
  publish(peer: string, id: string, bytes: Uint8Array): void;
  forget(channel: RelayChannel): void;
  drop(reason: string, detail?: Record<string, unknown>): void;
}

/** What the writer handed over and credit has not let out yet: whole chunks, the first from `offset` on. */
interface PendingWrite {
  chunks: Buffer[];
  offset: number;
  remaining: number;
  callback: (error?: Error | null) => void;
}

/** One relayed byte channel: a Duplex whose bytes cross NATS. */
export class RelayChannel extends Duplex {
  readonly peer: string;
  readonly id: string;
  readonly direction: "inbound" | "outbound";
  /** What runs over it; an inbound channel learns it from the open frame (an older peer's says nothing: libp2p). */
  purpose: RelayPurpose;
  bytesSent = 0;
  bytesReceived = 0;
  readonly #endpoint: ChannelEndpoint;
  #sendSequence = 0;
  #receiveSequence = 0;
  /** Bytes the peer allows us to send. */
  #credit = 0;
  /** Bytes delivered to our reader and already credited back. */
  #credited = 0;
  /** Credit given to the peer so far (initial window and grants); granted − delivered is what it may still send. */
  #granted = 0;
  /** The window this end gives the peer (at open or accept, then grown on a long path): credit goes back a quarter of it at a time. */
  readonly #window: ReceiveWindow;
  #openedAt: number | undefined;
  /** Bytes the reader took and the endpoint's budget was told of; granted − released is held against the budget. */
  #released = 0;
  #delivered = 0;
  #pending: PendingWrite | undefined;
  #accepted = false;
  #finSent = false;
  #ended = false;
  lastHeardAt: number; // when the peer's last frame came (pings too), on the clock's monotonic time: a spare's sign of life (spares.ts)
  #lastSent: number;
  #timer: unknown;
  #resetReason: string | undefined;
  #grantScheduled = false;

  constructor(endpoint: ChannelEndpoint, peer: string, id: string, direction: "inbound" | "outbound", purpose: RelayPurpose) {
    super({ allowHalfOpen: true, highWaterMark: 64 * 1024 });
    this.#endpoint = endpoint;
    this.peer = peer;
    this.id = id;
    this.direction = direction;
    this.purpose = purpose;
    // A peer can reset a channel before its opener or acceptor listens (an accept and a reset in one
    // read): an 'error' nobody heard would end the agent. The reason stays in resetReason and an event.
    this.on("error", () => undefined);
    const clock = endpoint.settings.clock;
    this.lastHeardAt = clock.monotonic();
    this.#lastSent = clock.monotonic();
    this.#window = new ReceiveWindow({ bytes: 0, maxBytes: endpoint.settings.maxWindowBytes });
    this.#timer = clock.setInterval(() => this.#tick(), Math.max(100, Math.floor(endpoint.settings.pingIntervalMs / 2)));
  }

  get accepted(): boolean {
    return this.#accepted;
  }

  /** The window this end gives the peer now, and the smallest round trip it measured (relay-window.ts). */
  get receiveWindow(): { bytes: number; minRttMs: number | undefined } {
    return { bytes: this.#window.bytes, minRttMs: this.#window.minRttMs };
  }

  /** Why the channel was reset, if it was. */
  get resetReason(): string | undefined {
    return this.#resetReason;
  }

  /** internal */
  sendControl(type: FrameType, payload?: Uint8Array): void {
    this.#send(encodeFrame(type, this.#sendSequence++, payload));
  }

  #send(frame: Uint8Array): void {
    this.#endpoint.publish(this.peer, this.id, frame);
    this.#lastSent = this.#endpoint.settings.clock.monotonic();
  }

  /** internal: a frame from the peer, in arrival order. */
  receive(frame: RelayFrame): void {
    if (this.destroyed) return;
    if (frame.sequence !== this.#receiveSequence) {
      this.#endpoint.drop("sequence gap", { peer: this.peer, channel: this.id, expected: this.#receiveSequence, got: frame.sequence });
      this.reset(`sequence gap: expected frame ${this.#receiveSequence}, got ${frame.sequence} (frames were lost on the relay path)`);
      return;
    }
    this.#receiveSequence = (this.#receiveSequence + 1) >>> 0;
    this.lastHeardAt = this.#endpoint.settings.clock.monotonic();
    switch (frame.type) {
      case frameTypes.open: {
        // Only the first frame of an inbound channel: a second open would grant the peer a second window.
        if (this.direction !== "inbound" || this.#accepted) return this.reset("open frame on a channel already open");
        const open = decodeOpen(frame.payload);
        // Refused before any credit is granted: a reset channel must hold none of the budget.
        if (open.error !== undefined) return this.reset(open.error);
        this.#credit += open.window;
        this.purpose = open.purpose;
        this.#accepted = true;
        this.sendControl(frameTypes.accept, encodeAccept({ window: this.grantInitial() }));
        this.#event("open");
        return;
      }
      case frameTypes.accept: {
        if (this.direction !== "outbound" || this.#accepted) return this.reset("accept frame on a channel already accepted");
        const accept = decodeAccept(frame.payload);
        if (accept.error !== undefined) return this.reset(accept.error);
        this.#credit += accept.window;
        this.#accepted = true;
        if (this.#openedAt !== undefined) this.#window.sample(this.lastHeardAt - this.#openedAt);
        this.emit("accepted");
        this.#event("open");
        this.#flush();
        return;
      }
      case frameTypes.data: {
        if (this.#ended) return this.reset("data after end of stream");
        const room = this.#granted - this.#delivered;
        if (frame.payload.byteLength > room) return this.reset(`peer sent ${frame.payload.byteLength} bytes with only ${room} of credit`);
        this.bytesReceived += frame.payload.byteLength;
        this.#delivered += frame.payload.byteLength;
        this.#window.dataArrived(this.lastHeardAt, this.#delivered);
        // A view, not a copy: the NATS client hands each message a fresh socket read or
        // message buffer (@nats-io/transport-node, parser.js) and never writes to it again.
        this.push(Buffer.from(frame.payload.buffer, frame.payload.byteOffset, frame.payload.byteLength));
        this.#maybeGrantCredit();
        return;
      }
      case frameTypes.credit: {
        const grant = decodeCredit(frame.payload);
        if (grant === undefined) return this.reset("malformed credit frame");
        this.#credit += grant;
        this.#flush();
        return;
      }
      case frameTypes.fin: {
        this.#ended = true;
        this.push(null);
        this.#maybeFinish();
        return;
      }
      case frameTypes.reset: {
        const reason = new TextDecoder().decode(frame.payload) || "reset by peer";
        this.#terminate(`peer reset the channel: ${reason}`, false);
        return;
      }
      case frameTypes.ping:
        return;
    }
  }

  /** Ends the channel abruptly, telling the peer; readers and writers get an error. */
  reset(reason: string): void {
    this.#terminate(reason, true);
  }

  #terminate(reason: string, tellPeer: boolean): void {
    if (this.destroyed) return;
    this.#resetReason = reason;
    if (tellPeer) this.sendControl(frameTypes.reset, new TextEncoder().encode(reason.slice(0, 200)));
    this.#event("reset", reason);
    this.destroy(new LeafmeshError("TUNNEL_FAILED", `relay channel ${this.id} with ${this.peer} was reset: ${reason}`));
  }

  #event(status: "open" | "closed" | "reset", reason?: string): void {
    this.#endpoint.settings.onEvent?.({ peer: this.peer, channel: this.id, status, bytes: this.bytesSent + this.bytesReceived, reason });
  }

  /** internal: the credit this end gives the peer at open or accept (within the endpoint's budget). */
  grantInitial(): number {
    const window = this.#endpoint.budget.allot(0, this.#endpoint.settings.windowBytes);
    this.#granted += window;
    this.#window.bytes = window;
    if (this.direction === "outbound") this.#openedAt = this.#endpoint.settings.clock.monotonic();
    return window;
  }

  /** internal: the endpoint's budget has room again. */
  regrant(): void {
    if (!this.destroyed) this.#maybeGrantCredit();
  }

  #maybeGrantCredit(): void {
    const consumed = this.#delivered - this.readableLength;
    // What the reader took leaves the budget; what is in flight or still unread stays in it.
    if (consumed > this.#released) {
      this.#endpoint.budget.release(consumed - this.#released);
      this.#released = consumed;
    }
    // Credit goes back a quarter window at a time (not per frame read: a credit message per data
    // message), on a long path with the window's growth. A peer out of credit whose bytes were all
    // read is owed the whole window, so the threshold is always met then.
    const pending = consumed - this.#credited;
    const window = this.#window.bytes;
    if (pending > 0 && pending >= window / 4) {
      const now = this.#endpoint.settings.clock.monotonic();
      const extra = this.#window.growth(now, consumed, this.readableLength < window / 4);
      const grant = this.#endpoint.budget.allot(this.#granted - consumed, pending + extra);
      this.#endpoint.budget.starve(this, grant < pending);
      if (grant === 0) return;
      const credited = Math.min(grant, pending);
      this.#credited += credited;
      this.#window.bytes += grant - credited;
      this.#window.grantSent(now, this.#granted);
      this.#granted += grant;
      this.sendControl(frameTypes.credit, encodeCredit(grant));
    }
  }

  #tick(): void {
    const { clock, pingIntervalMs, idleTimeoutMs } = this.#endpoint.settings;
    const now = clock.monotonic();
    if (now - this.lastHeardAt > idleTimeoutMs) {
      this.reset(`no frame from ${this.peer} for ${now - this.lastHeardAt} ms (relay path lost)`);
      return;
    }
    if (now - this.#lastSent >= pingIntervalMs) this.sendControl(frameTypes.ping);
  }

  #flush(): void {
    const pending = this.#pending;
    if (!pending || !this.#accepted || this.destroyed) return;
    const frameBytes = this.#endpoint.settings.frameBytes ?? defaultFrameBytes[this.purpose];
    while (pending.remaining > 0 && this.#credit > 0) {
      const size = Math.min(frameBytes, this.#credit, pending.remaining);
      this.#sendData(pending, size);
      this.#credit -= size;
      this.bytesSent += size;
      pending.remaining -= size;
    }
    if (pending.remaining === 0) {
      this.#pending = undefined;
      pending.callback();
    }
  }

  /** One data frame of the next `size` pending bytes, copied once: from the writer's chunks into the frame. */
  #sendData(pending: PendingWrite, size: number): void {
    const frame = frameWithHeader(frameTypes.data, this.#sendSequence++, size);
    let filled = 0;
    while (filled < size) {
      const chunk = pending.chunks[0];
      const take = Math.min(size - filled, chunk.byteLength - pending.offset);
      chunk.copy(frame, headerBytes + filled, pending.offset, pending.offset + take);
      filled += take;
      pending.offset += take;
      if (pending.offset === chunk.byteLength) {
        pending.chunks.shift();
        pending.offset = 0;
      }
    }
    this.#send(frame);
  }

  #maybeFinish(): void {
    if (this.#finSent && this.#ended && !this.destroyed) {
      this.#event("closed");
      this.destroy();
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#pending = { chunks: [chunk], offset: 0, remaining: chunk.byteLength, callback };
    this.#flush();
  }

  /** Writes queued while credit ran out go out together: fewer, fuller NATS messages. */
  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    const list = chunks.map(({ chunk }) => chunk).filter((chunk) => chunk.byteLength > 0);
    this.#pending = { chunks: list, offset: 0, remaining: list.reduce((sum, chunk) => sum + chunk.byteLength, 0), callback };
    this.#flush();
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (!this.destroyed) this.sendControl(frameTypes.fin);
    this.#finSent = true;
    callback();
    queueMicrotask(() => this.#maybeFinish());
  }

  override _read(): void {
    this.#scheduleGrant();
  }

  /**
   * Every read takes data out of the buffer (flowing readers too: Node's flow() calls
   * read()), and credit is owed for it. _read alone is not enough: it runs before read()
   * removes the data, and not again until the next push, so a reader that paused and then
   * resumed drained the buffer with no credit ever following (a stall, seen in a test).
   */
  override read(size?: number): unknown {
    const chunk: unknown = super.read(size);
    if (chunk !== null) this.#scheduleGrant();
    return chunk;
  }

  #scheduleGrant(): void {
    if (this.#grantScheduled) return;
    this.#grantScheduled = true;
    process.nextTick(() => {
      this.#grantScheduled = false;
      this.regrant();
    });
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#endpoint.settings.clock.clearInterval(this.#timer);
    this.#endpoint.forget(this);
    // Credit the peer can no longer use goes back to the budget.
    this.#endpoint.budget.starve(this, false);
    this.#endpoint.budget.release(this.#granted - this.#released);
    this.#released = this.#granted;
    if (!this.#resetReason && !(this.#finSent && this.#ended)) {
      // Destroyed locally before a clean close: the peer must not mistake it for an end of stream.
      this.#resetReason = error?.message ?? "closed locally before the end of stream";
      this.sendControl(frameTypes.reset, new TextEncoder().encode(this.#resetReason.slice(0, 200)));
      this.#event("reset", this.#resetReason);
    }
    this.#pending = undefined;
    callback(error);
  }
}
