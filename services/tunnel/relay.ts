/**
 * The relay endpoint of one node: byte channels to other nodes carried over NATS
 * subjects (`relay.<to>.<from>.<channel>`, outside `mesh.>`) through leaf → hub →
 * leaf. It opens channels, accepts those addressed to this node (`#receive`: where
 * a peer's channels arrive, and where limits on them belong), dispatches their
 * frames and counts every frame it drops. What a channel guarantees
 * (order, credit, liveness, resets) is relay-channel.ts; the wire format is
 * relay-frames.ts; the credit all channels towards this node share is
 * relay-budget.ts.
 *
 * A channel carries either a libp2p connection (noise with the mesh key, yamux:
 * one channel for every stream between the pair) or one tunnel stream under TLS;
 * either way a hub only ever sees ciphertext.
 *
 * ```ts
 * const relay = new RelayEndpoint({ nats, node: "edge-a", log, onChannel: (channel) => upgradeInbound(channel) });
 * const channel = await relay.open("edge-b");   // resolves when edge-b accepted
 * channel.write(bytes); channel.on("data", ...);
 * relay.close();
 * ```
 */
import { randomBytes } from "node:crypto";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { LeafmeshError } from "../../lib/errors.ts";
import { defaultRelayIdleTimeoutMs } from "./limits.ts";
import type { Logger } from "../../lib/log.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import { parseRelaySubject, relayInboxPattern, relaySubject } from "../../bus/subjects.ts";
import { CreditBudget } from "./relay-budget.ts";
import { RelayChannel, type ChannelEndpoint, type RelayChannelEvent } from "./relay-channel.ts";
import { decodeFrame, encodeFrame, encodeOpen, frameTypes, type RelayFrame, type RelayPurpose } from "./relay-frames.ts";

export { RelayChannel, type RelayChannelEvent } from "./relay-channel.ts";
export type { RelayPurpose } from "./relay-frames.ts";

export interface RelayEndpointOptions {
  nats: NatsConnection;
  node: string;
  log: Logger;
  /** Called with each channel a peer opened towards this node. */
  onChannel: (channel: RelayChannel) => void;
  clock?: Clock;
  /**
   * @default 262_144 — credit granted per channel at first, grown from the reader's rate
   * (relay-window.ts): a LAN path reaches megabytes in a few doublings. 4 MiB at first queued 33 s
   * of frames behind a 1 Mbit/s uplink, ahead of the pings of everything on the node's leaf link:
   * the relayed stream was reset and the leaf link dropped. 256 KiB is 2 s there. All channels
   * towards a node together stay within `budgetBytes`.
   */
  windowBytes?: number;
  /**
   * @default 16_777_216 — what a channel's window may grow to while the path's bandwidth × round
   * trip asks for more than `windowBytes` (a long path: relay-window.ts); within the budget.
   */
  maxWindowBytes?: number;
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
   * Payload bytes per NATS message, for every channel. @default by purpose (`defaultFrameBytes`
   * in relay-frames.ts): 262,148 for libp2p, 32,812 for tls-stream; both far under max_payload
   * (1 MiB), so one frame never delays others for long.
   */
  frameBytes?: number;
  /** @default 5_000 — how long `open` waits for the peer to accept. */
  openTimeoutMs?: number;
  /** @default idleTimeoutMs / 4 (2_000) — ping interval on a channel with nothing else to send. */
  pingIntervalMs?: number;
  /** @default defaultRelayIdleTimeoutMs (limits.ts: 8_000) — silence after which a channel is reset. */
  idleTimeoutMs?: number;
  /** Called when a channel opens or ends (for `mesh.<node>.tunnel.relay`). */
  onEvent?: (event: RelayChannelEvent) => void;
  /**
   * @default 4_096 — channels one peer may have open towards this node (a relayed TLS stream is
   * one): the next is reset at once, counted as "peer over its channel limit" (issue 15 item 7).
   * The agent sets it with --tunnel-max-streams-per-peer.
   */
  maxChannelsPerPeer?: number;
}

/** Ended channels remembered to tell their late frames from unknown ones (~100 bytes each). */
const endedMemory = 16_384;

/** The drop reason of a frame that arrived after its channel ended here. */
const lateFrame = "late frame of an ended channel";

/** The relay endpoint of one node: opens channels and accepts those addressed to it. */
export class RelayEndpoint implements ChannelEndpoint {
  readonly node: string;
  /** Frames dropped, by reason (Tailscale DERP style: every drop counted). */
  readonly drops = new Map<string, number>();
  readonly settings: ChannelEndpoint["settings"];
  readonly budget: CreditBudget;
  readonly #options: RelayEndpointOptions;
  readonly #openTimeoutMs: number;
  readonly #channels = new Map<string, RelayChannel>();
  /**
   * Channels that ended lately (key → when): frames the peer sent before it learnt of the end
   * (a credit for bytes just read, a ping, data in flight at a reset) still arrive, and are late,
   * not unknown (issue 15 item 8). Bounded: the oldest go first past `endedMemory`.
   */
  readonly #ended = new Map<string, number>();
  /** Channels each peer opened towards this node, open now. */
  readonly #inboundByPeer = new Map<string, number>();
  readonly #loggedDrops = new Set<string>();
  #subscription: Subscription;
  #closed = false;

  constructor(options: RelayEndpointOptions) {
    this.node = options.node;
    this.#options = options;
    this.#openTimeoutMs = options.openTimeoutMs ?? 5_000;
    this.settings = {
      clock: options.clock ?? systemClock,
      windowBytes: options.windowBytes ?? 256 * 1024,
      maxWindowBytes: options.maxWindowBytes ?? 16 * 1_048_576,
      pingIntervalMs: options.pingIntervalMs ?? (options.idleTimeoutMs ?? defaultRelayIdleTimeoutMs) / 4,
      idleTimeoutMs: options.idleTimeoutMs ?? defaultRelayIdleTimeoutMs,
      frameBytes: options.frameBytes,
      onEvent: options.onEvent,
    };
    this.budget = new CreditBudget({ budgetBytes: options.budgetBytes ?? 16 * 1_048_576, minWindowBytes: options.minWindowBytes ?? 65_536 });
    this.#subscription = options.nats.subscribe(relayInboxPattern(options.node), {
      callback: (error, message) => {
        if (error) {
          this.#options.log.warn({ err: error }, "relay subscription failed");
          return;
        }
        // This callback runs in the NATS client's reader: anything thrown here would close the
        // node's whole connection (bus, records, rpc), so a frame that breaks its handling is a drop.
        try {
          this.#receive(message.subject, message.data);
        } catch (error) {
          this.drop("frame handling failed", { subject: message.subject, err: error });
        }
      },
    });
  }

  /** Credit held over all channels: bytes peers may still send, are sending, or this node received and has not read yet. */
  get outstandingCredit(): number {
    return this.budget.outstanding;
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
    channel.sendControl(frameTypes.open, encodeOpen({ window: channel.grantInitial(), purpose }));
    const clock = this.settings.clock;
    await new Promise<void>((resolve, reject) => {
      const fail = (error: Error) => {
        clock.clearTimeout(timer);
        channel.off("error", fail);
        reject(error);
      };
      const timer = clock.setTimeout(() => {
        fail(new LeafmeshError("TUNNEL_FAILED", `relay: ${peer} did not accept a channel within ${this.#openTimeoutMs} ms (is it running and attached to the fabric?)`));
        channel.destroy();
      }, this.#openTimeoutMs);
      channel.once("error", fail);
      channel.once("accepted", () => {
        clock.clearTimeout(timer);
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

  /** internal (ChannelEndpoint): a channel's frame to its peer. */
  publish(peer: string, id: string, bytes: Uint8Array): void {
    if (this.#options.nats.isClosed()) return;
    this.#options.nats.publish(relaySubject(peer, this.node, id), bytes);
  }

  /** internal (ChannelEndpoint): a channel ended. */
  forget(channel: RelayChannel): void {
    const key = this.#key(channel.peer, channel.id);
    if (!this.#channels.delete(key)) return;
    if (channel.direction === "inbound") {
      const left = (this.#inboundByPeer.get(channel.peer) ?? 1) - 1;
      if (left > 0) this.#inboundByPeer.set(channel.peer, left);
      else this.#inboundByPeer.delete(channel.peer);
    }
    this.#ended.delete(key);
    this.#ended.set(key, this.settings.clock.monotonic());
    // Beyond the idle timeout nothing of the peer's is still on the way (its end would have reset by then).
    const horizon = this.settings.clock.monotonic() - 2 * this.settings.idleTimeoutMs;
    for (const [old, at] of this.#ended) {
      if (this.#ended.size <= endedMemory && at >= horizon) break;
      this.#ended.delete(old);
    }
  }

  /** internal (ChannelEndpoint): a frame dropped, counted by reason and said once per reason. */
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
      // A late frame of a channel that ended here (counted, not warned about: the peer sent it before it knew), or a forged one.
      if (this.#ended.has(key)) this.drops.set(lateFrame, (this.drops.get(lateFrame) ?? 0) + 1);
      else if (frame.type !== frameTypes.reset) this.drop("unknown channel", { subject, type: frame.type });
      return;
    }
    if (this.#closed) return;
    if (frame.sequence !== 0) return this.drop("open out of sequence", { subject });
    const open = this.#inboundByPeer.get(parts.fromNode) ?? 0;
    if (open >= (this.#options.maxChannelsPerPeer ?? 4_096)) {
      // Refused without a channel: the opener's first frame from us is this reset, and its open() fails with the reason.
      this.publish(parts.fromNode, parts.channel, encodeFrame(frameTypes.reset, 0, new TextEncoder().encode(`${this.node} has ${open} channels open from ${parts.fromNode}, its limit`)));
      return this.drop("peer over its channel limit", { peer: parts.fromNode, open });
    }
    this.#inboundByPeer.set(parts.fromNode, open + 1);
    const inbound = new RelayChannel(this, parts.fromNode, parts.channel, "inbound", "libp2p");
    this.#channels.set(key, inbound);
    inbound.receive(frame);
    if (inbound.destroyed) return; // refused (malformed, an unknown purpose): reset already
    try {
      this.#options.onChannel(inbound);
    } catch (error) {
      inbound.reset("the accepting node failed to take the channel");
      throw error;
    }
  }
}
