/**
 * The relay: byte channels between two nodes carried over NATS subjects
 * (`relay.<to>.<from>.<channel>`, outside `mesh.>`) through leaf → hub → leaf.
 * A channel is a Node Duplex; the tunnel runs a libp2p upgrade (noise with the
 * mesh key, yamux) on top, so a hub only ever sees ciphertext and one channel
 * carries every stream between the pair.
 *
 * What the channel itself guarantees:
 * - order: every frame carries a per-direction sequence number; a gap (a frame
 *   lost while a hub died) resets the channel — bytes are never silently dropped.
 * - flow control: the sender spends credit the receiver grants as its reader
 *   consumes, so a subscriber never holds more than `windowBytes` per channel;
 *   and all channels towards one node together hold at most `budgetBytes` of
 *   credit (each keeps `minWindowBytes` whatever the others hold), so many busy
 *   channels do not make the node's NATS client a slow consumer either.
 * - liveness: idle channels exchange pings; silence longer than `idleTimeoutMs`
 *   resets the channel (a cut path loses frames without any error at the sender).
 *
 * ```ts
 * const relay = new RelayEndpoint({ nats, node: "edge-a", log, onChannel: (channel) => upgradeInbound(channel) });
 * const channel = await relay.open("edge-b");   // resolves when edge-b accepted
 * channel.write(bytes); channel.on("data", ...);
 * relay.close();
 * ```
 */
import { randomBytes } from "node:crypto";
import { Duplex } from "node:stream";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import { parseRelaySubject, relayInboxPattern, relaySubject } from "../../bus/subjects.ts";

export const frameTypes = { open: 1, accept: 2, data: 3, credit: 4, fin: 5, reset: 6, ping: 7 } as const;
type FrameType = (typeof frameTypes)[keyof typeof frameTypes];
const frameTypeValues = new Set<number>(Object.values(frameTypes));

/** type (1) | sequence (4, big endian) | payload */
const headerBytes = 5;
/** What a libp2p connection over the relay writes at a time: one noise message, its 2-byte length and up to 65,535 bytes. */
const noiseMessageBytes = 2 + 65_535;
/** A full TLS 1.3 record: 5-byte header, 16 KiB of data, its content type and a 16-byte tag. */
const tlsRecordBytes = 5 + 16_384 + 1 + 16;

/**
 * Payload bytes per NATS message, by what the channel carries (bench/tunnel, relayed):
 * - libp2p: four whole noise messages, ~45 MB/s against ~33 with one per message;
 * - tls-stream: two whole TLS records, 130–150 MB/s against 100–120 with 256 KiB frames.
 *   A message the NATS client reads in one socket read (64 KiB) is handed over as a view;
 *   a larger one is gathered into buffers that grow by copying, all of it garbage.
 */
const defaultFrameBytes: Record<RelayPurpose, number> = { libp2p: 4 * noiseMessageBytes, "tls-stream": 2 * tlsRecordBytes };

/** What a relay channel carries: a libp2p connection, or one tunnel stream under TLS. */
export type RelayPurpose = "libp2p" | "tls-stream";

export interface RelayFrame {
  type: FrameType;
  sequence: number;
  payload: Uint8Array;
}

export function encodeFrame(type: FrameType, sequence: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const bytes = frameWithHeader(type, sequence, payload.byteLength);
  bytes.set(payload, headerBytes);
  return bytes;
}

/** A frame of `payloadBytes` with its header written and its payload left to fill (not zeroed: every byte is written). */
function frameWithHeader(type: FrameType, sequence: number, payloadBytes: number): Buffer {
  const bytes = Buffer.allocUnsafe(headerBytes + payloadBytes);
  bytes[0] = type;
  bytes.writeUInt32BE(sequence >>> 0, 1);
  return bytes;
}

/** Throws on anything that is not a well-formed frame. */
export function decodeFrame(bytes: Uint8Array): RelayFrame {
  if (bytes.byteLength < headerBytes) throw new LeafmeshError("TUNNEL_FAILED", `relay frame too short (${bytes.byteLength} bytes)`);
  const type = bytes[0];
  if (!frameTypeValues.has(type)) throw new LeafmeshError("TUNNEL_FAILED", `relay frame of unknown type ${type}`);
  const sequence = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(1);
  return { type: type as FrameType, sequence, payload: bytes.subarray(headerBytes) };
}

export interface RelayEndpointOptions {
  nats: NatsConnection;
  node: string;
  log: Logger;
  /** Called with each channel a peer opened towards this node. */
  onChannel: (channel: RelayChannel) => void;
  clock?: Clock;
  /**
   * @default 4_194_304 — credit granted per channel: fills a leaf→hub→leaf path of ~40 ms at
   * ~100 MB/s (bench/tunnel: 67–77 MB/s relayed against 53–62 with 1 MiB); all channels
   * towards a node together stay within `budgetBytes`.
   */
  windowBytes?: number;
  /**
   * @default 16_777_216 — credit all channels towards this node may hold together (bytes in
   * flight or received and not yet read) beyond their `minWindowBytes` each: bounds what can
   * be queued for this node's NATS client (nats-server cuts a client off past 64 MiB pending)
   * and what waits unread in memory, however many streams are busy.
   */
  budgetBytes?: number;
  /** @default 65_536 — credit a channel may always hold, whatever the budget (no channel starves for good). */
  minWindowBytes?: number;
  /**
   * Payload bytes per NATS message, for every channel. @default by purpose (`defaultFrameBytes`):
   * 262,148 for libp2p, 32,812 for tls-stream; both far under max_payload (1 MiB), so one
   * frame never delays others for long.
   */
  frameBytes?: number;
  /** @default 5_000 — how long `open` waits for the peer to accept. */
  openTimeoutMs?: number;
  /** @default 2_000 — ping interval on a channel with nothing else to send. */
  pingIntervalMs?: number;
  /** @default 8_000 — silence after which a channel is reset: a leaf moves to another hub in ~1-2 s (docs/nats-facts.md); four pings lost means the path is gone. */
  idleTimeoutMs?: number;
  /** Called when a channel opens or ends (for `mesh.<node>.tunnel.relay`). */
  onEvent?: (event: { peer: string; channel: string; status: "open" | "closed" | "reset"; bytes: number; reason?: string }) => void;
}

/** The relay endpoint of one node: opens channels and accepts those addressed to it. */
export class RelayEndpoint {
  readonly node: string;
  /** Frames dropped, by reason (Tailscale DERP style: every drop counted). */
  readonly drops = new Map<string, number>();
  readonly #options: Required<Omit<RelayEndpointOptions, "onEvent" | "frameBytes">> & Pick<RelayEndpointOptions, "onEvent" | "frameBytes">;
  readonly #channels = new Map<string, RelayChannel>();
  readonly #loggedDrops = new Set<string>();
  readonly #starved = new Set<RelayChannel>();
  #outstanding = 0;
  #wakeScheduled = false;
  #subscription: Subscription;
  #closed = false;

  constructor(options: RelayEndpointOptions) {
    this.node = options.node;
    this.#options = {
      clock: systemClock,
      windowBytes: 4 * 1_048_576,
      budgetBytes: 16 * 1_048_576,
      minWindowBytes: 65_536,
      openTimeoutMs: 5_000,
      pingIntervalMs: 2_000,
      idleTimeoutMs: 8_000,
      ...options,
    };
    this.#subscription = options.nats.subscribe(relayInboxPattern(options.node), {
      callback: (error, message) => {
        if (error) {
          this.#options.log.warn({ err: error }, "relay subscription failed");
          return;
        }
        this.#receive(message.subject, message.data);
      },
    });
  }

  /** Credit held over all channels: bytes peers may still send, are sending, or this node received and has not read yet. */
  get outstandingCredit(): number {
    return this.#outstanding;
  }

  /** internal: how much of `wanted` a channel that holds `held` may be granted now (and it is counted as granted). */
  allot(held: number, wanted: number): number {
    const floor = Math.max(0, this.#options.minWindowBytes - held);
    const shared = Math.max(0, this.#options.budgetBytes - this.#outstanding);
    const given = Math.max(0, Math.min(wanted, Math.max(floor, shared)));
    this.#outstanding += given;
    return given;
  }

  /** internal: credit given back (a reader took its bytes, or a channel ended); starved channels may get theirs now. */
  release(bytes: number): void {
    this.#outstanding -= bytes;
    if (this.#starved.size === 0 || this.#wakeScheduled) return;
    // Woken on the next tick, once: a channel woken here releases too, and doing it in place recursed.
    this.#wakeScheduled = true;
    process.nextTick(() => {
      this.#wakeScheduled = false;
      for (const channel of [...this.#starved]) {
        if (this.#outstanding >= this.#options.budgetBytes) break;
        channel.regrant();
      }
    });
  }

  /** internal */
  starve(channel: RelayChannel, starved: boolean): void {
    if (starved) this.#starved.add(channel);
    else this.#starved.delete(channel);
  }

  get channelCount(): number {
    return this.#channels.size;
  }

  /** The open channels' peers and ids (for status: where relayed streams flow). */
  channels(): { peer: string; id: string }[] {
    return [...this.#channels.values()].map((channel) => ({ peer: channel.peer, id: channel.id }));
  }

  /**
   * Opens a channel to `peer`; rejects when the peer does not accept within the open timeout.
   * `purpose` tells the peer what runs over it: a libp2p connection (noise + yamux), or
   * one tunnel stream under TLS (tls-streams.ts).
   */
  async open(peer: string, purpose: RelayPurpose = "libp2p"): Promise<RelayChannel> {
    if (this.#closed) throw new LeafmeshError("NOT_RUNNING", "relay endpoint is closed");
    const id = randomBytes(9).toString("base64url").replace(/[^A-Za-z0-9]/g, "x");
    const channel = new RelayChannel(this, peer, id, "outbound", purpose);
    this.#channels.set(this.#key(peer, id), channel);
    channel.sendControl(frameTypes.open, new TextEncoder().encode(JSON.stringify({ window: channel.grantInitial(), purpose })));
    await new Promise<void>((resolve, reject) => {
      const fail = (error: Error) => {
        this.#options.clock.clearTimeout(timer);
        channel.off("error", fail);
        reject(error);
      };
      const timer = this.#options.clock.setTimeout(() => {
        fail(new LeafmeshError("TUNNEL_FAILED", `relay: ${peer} did not accept a channel within ${this.#options.openTimeoutMs} ms (is it running and attached to the fabric?)`));
        channel.destroy();
      }, this.#options.openTimeoutMs);
      channel.once("error", fail);
      channel.once("accepted", () => {
        this.#options.clock.clearTimeout(timer);
        channel.off("error", fail);
        resolve();
      });
    });
    return channel;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#subscription.unsubscribe();
    for (const channel of [...this.#channels.values()]) channel.reset("relay endpoint closed");
  }

  /** internal: used by channels */
  publish(peer: string, id: string, bytes: Uint8Array): void {
    if (this.#options.nats.isClosed()) return;
    this.#options.nats.publish(relaySubject(peer, this.node, id), bytes);
  }

  /** internal */
  get options() {
    return this.#options;
  }

  /** internal */
  forget(channel: RelayChannel): void {
    this.#channels.delete(this.#key(channel.peer, channel.id));
  }

  /** internal */
  drop(reason: string, detail: Record<string, unknown> = {}): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
    if (this.#loggedDrops.has(reason)) return;
    this.#loggedDrops.add(reason);
    this.#options.log.warn({ reason, ...detail }, "relay frame dropped (logged once per reason, counted in drops)");
  }

  #key(peer: string, id: string): string {
    return `${peer}.${id}`;
  }

  #receive(subject: string, data: Uint8Array): void {
    const parts = parseRelaySubject(subject);
    if (!parts || parts.toNode !== this.node) return this.drop("bad subject", { subject });
    let frame: RelayFrame;
    try {
      frame = decodeFrame(data);
    } catch (error) {
      return this.drop("malformed frame", { subject, err: error });
    }
    const key = this.#key(parts.fromNode, parts.channel);
    const channel = this.#channels.get(key);
    if (channel) return channel.receive(frame);
    if (frame.type !== frameTypes.open) {
      // A late frame of a channel that already ended, or a forged one: nothing to deliver it to.
      if (frame.type !== frameTypes.reset) this.drop("unknown channel", { subject, type: frame.type });
      return;
    }
    if (this.#closed) return;
    if (frame.sequence !== 0) return this.drop("open out of sequence", { subject });
    const inbound = new RelayChannel(this, parts.fromNode, parts.channel, "inbound", "libp2p");
    this.#channels.set(key, inbound);
    // Until it is handed out nothing listens on it: an open it refuses (malformed, an unknown
    // purpose) resets it, and that reset must not become an uncaught error in the agent.
    const unheard = () => undefined;
    inbound.on("error", unheard);
    inbound.receive(frame);
    if (inbound.destroyed) return;
    inbound.off("error", unheard);
    this.#options.onChannel(inbound);
  }
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
  readonly #endpoint: RelayEndpoint;
  #sendSequence = 0;
  #receiveSequence = 0;
  /** Bytes the peer allows us to send. */
  #credit = 0;
  /** Bytes delivered to our reader and already credited back. */
  #credited = 0;
  /** Credit given to the peer so far (initial window and grants); granted − delivered is what it may still send. */
  #granted = 0;
  /** Bytes the reader took and the endpoint's budget was told of; granted − released is held against the budget. */
  #released = 0;
  #delivered = 0;
  #pending: PendingWrite | undefined;
  #accepted = false;
  #finSent = false;
  #ended = false;
  #lastReceived: number;
  #lastSent: number;
  #timer: unknown;
  #resetReason: string | undefined;

  constructor(endpoint: RelayEndpoint, peer: string, id: string, direction: "inbound" | "outbound", purpose: RelayPurpose) {
    super({ allowHalfOpen: true, highWaterMark: 64 * 1024 });
    this.#endpoint = endpoint;
    this.peer = peer;
    this.id = id;
    this.direction = direction;
    this.purpose = purpose;
    const clock = endpoint.options.clock;
    this.#lastReceived = clock.now();
    this.#lastSent = clock.now();
    this.#timer = clock.setInterval(() => this.#tick(), Math.max(100, Math.floor(endpoint.options.pingIntervalMs / 2)));
  }

  get accepted(): boolean {
    return this.#accepted;
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
    this.#lastSent = this.#endpoint.options.clock.now();
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
    this.#lastReceived = this.#endpoint.options.clock.now();
    switch (frame.type) {
      case frameTypes.open: {
        this.#credit += this.#parseWindow(frame.payload);
        this.purpose = this.#parsePurpose(frame.payload);
        this.#accepted = true;
        this.sendControl(frameTypes.accept, new TextEncoder().encode(JSON.stringify({ window: this.grantInitial() })));
        this.#event("open");
        return;
      }
      case frameTypes.accept: {
        this.#credit += this.#parseWindow(frame.payload);
        this.#accepted = true;
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
        // A view, not a copy: the NATS client hands each message a fresh socket read or
        // message buffer (@nats-io/transport-node, parser.js) and never writes to it again.
        this.push(Buffer.from(frame.payload.buffer, frame.payload.byteOffset, frame.payload.byteLength));
        this.#maybeGrantCredit();
        return;
      }
      case frameTypes.credit: {
        if (frame.payload.byteLength !== 4) return this.reset("malformed credit frame");
        this.#credit += new DataView(frame.payload.buffer, frame.payload.byteOffset, 4).getUint32(0);
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

  #parsePurpose(payload: Uint8Array): RelayPurpose {
    let purpose: unknown;
    try {
      purpose = (JSON.parse(new TextDecoder().decode(payload)) as { purpose?: unknown }).purpose;
    } catch {
      return "libp2p"; // the window check resets a malformed open frame
    }
    if (purpose === undefined || purpose === "libp2p" || purpose === "tls-stream") return purpose ?? "libp2p";
    this.reset(`open frame for an unknown purpose '${String(purpose).slice(0, 40)}'`);
    return "libp2p";
  }

  #parseWindow(payload: Uint8Array): number {
    try {
      const window = (JSON.parse(new TextDecoder().decode(payload)) as { window?: unknown }).window;
      if (typeof window === "number" && Number.isInteger(window) && window > 0 && window <= 64 * 1024 * 1024) return window;
    } catch {
      // fall through: a bad window is the peer's bug, reported by the reset below
    }
    this.reset("malformed open frame");
    return 0;
  }

  #event(status: "open" | "closed" | "reset", reason?: string): void {
    this.#endpoint.options.onEvent?.({ peer: this.peer, channel: this.id, status, bytes: this.bytesSent + this.bytesReceived, reason });
  }

  /** internal: the credit this end gives the peer at open or accept (within the endpoint's budget). */
  grantInitial(): number {
    const window = this.#endpoint.allot(0, this.#endpoint.options.windowBytes);
    this.#granted += window;
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
      this.#endpoint.release(consumed - this.#released);
      this.#released = consumed;
    }
    const pending = consumed - this.#credited;
    if (pending >= this.#endpoint.options.windowBytes / 4 || (pending > 0 && this.readableLength === 0)) {
      const grant = this.#endpoint.allot(this.#granted - consumed, pending);
      this.#endpoint.starve(this, grant < pending);
      if (grant === 0) return;
      this.#credited += grant;
      this.#granted += grant;
      const payload = new Uint8Array(4);
      new DataView(payload.buffer).setUint32(0, grant);
      this.sendControl(frameTypes.credit, payload);
    }
  }

  #tick(): void {
    const { clock, pingIntervalMs, idleTimeoutMs } = this.#endpoint.options;
    const now = clock.now();
    if (now - this.#lastReceived > idleTimeoutMs) {
      this.reset(`no frame from ${this.peer} for ${now - this.#lastReceived} ms (relay path lost)`);
      return;
    }
    if (now - this.#lastSent >= pingIntervalMs) this.sendControl(frameTypes.ping);
  }

  #flush(): void {
    const pending = this.#pending;
    if (!pending || !this.#accepted || this.destroyed) return;
    const frameBytes = this.#endpoint.options.frameBytes ?? defaultFrameBytes[this.purpose];
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

  #grantScheduled = false;

  #scheduleGrant(): void {
    if (this.#grantScheduled) return;
    this.#grantScheduled = true;
    process.nextTick(() => {
      this.#grantScheduled = false;
      this.regrant();
    });
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#endpoint.options.clock.clearInterval(this.#timer);
    this.#endpoint.forget(this);
    // Credit the peer can no longer use goes back to the budget.
    this.#endpoint.starve(this, false);
    this.#endpoint.release(this.#granted - this.#released);
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
