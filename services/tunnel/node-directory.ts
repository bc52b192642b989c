/**
 * The node directory: this node's record in KV `mesh-nodes` (hub domain, through the leaf), looked at every
 * `refreshMs` and put when it changed or its keep-alive is due (`keepaliveMs`; less beside an older peer or
 * hub, peer-versions.ts), deleted when the node stops cleanly (`withdraw`) and expiring by the bucket's TTL when it
 * dies; and a watched cache of every other node's record.
 *
 * Every put reaches every node, so an unchanged record is not put again until its
 * keep-alive: N nodes cost N² / keep-alive deliveries a second (docs/limits.md,
 * wall 2). A peer's path that gave up is still retried at every look while the
 * peer's record is fresh (`onAlive`), as it was when records came every 5 s.
 *
 * While the hub is away the cache keeps what it knew (LAN peers are still found
 * by mDNS) and the directory keeps retrying in the background.
 *
 * A peer's record never goes back to an older one: revisions of the one stream are compared
 * (a lookup's get against the watch), and a put sent again reads the record anew.
 *
 * Why this file is long: this node's puts, its own key seen in the watch, and the watch and
 * lookups of its peers' records share the one bucket's revisions; the parts that stand alone
 * (record-times.ts, node-identity.ts) are apart already.
 *
 * ```ts
 * const directory = new NodeDirectory({ nats, node: "edge-a", log, clock, record: () => ownRecord() });
 * directory.start();
 * directory.get("edge-b"); // NodeRecord | undefined
 * ```
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm, type KV, type KvWatchEntry } from "@nats-io/kv";
import { buckets, hubDomain } from "../../bus/subjects.ts";
import { nodeRecordKeepaliveMs, nodeRecordRefreshMs, nodeRecordTtlMs, recordContent, type NodeRecord } from "../../bus/node-record.ts";
import type { Clock } from "../../lib/clock.ts";
import { describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { decodeDirectoryValue, encodeDirectoryValue, type NodeIdentity } from "./node-identity.ts";
import type { PeerTrust } from "./peer-trust.ts";
import { within } from "../../lib/within.ts";
import { RecordTimes } from "./record-times.ts";
import { keepaliveBeside } from "./peer-versions.ts";

export interface NodeDirectoryOptions {
  nats: NatsConnection;
  node: string;
  log: Logger;
  clock: Clock;
  /** This node's current record (called at each refresh). */
  record: () => NodeRecord;
  /** @default nodeRecordRefreshMs (bus/node-record.ts): how often the record is looked at (and put if it changed). */
  refreshMs?: number;
  /** @default nodeRecordKeepaliveMs (bus/node-record.ts): an unchanged record is put again after 3/4 to all of this. */
  keepaliveMs?: number;
  /** @default nodeRecordTtlMs (bus/node-record.ts): the bucket's TTL, and how long a peer's record counts as fresh. */
  ttlMs?: number;
  /** Called when a record arrives (it appeared, changed, or was kept alive). */
  onRecord?: (record: NodeRecord) => void;
  /** Called at every look with the peers whose record is fresh. */
  onAlive?: (records: NodeRecord[]) => void;
  /** @default Math.random — where in the last quarter of `keepaliveMs` the next keep-alive falls. */
  random?: () => number;
  /** With security on: records are signed with this node's certificate, and only records signed by their node's are used (node-identity.ts). */
  identity?: NodeIdentity;
  /** With an identity: a record signed by a revoked certificate is not used (peer-trust.ts). */
  trust?: PeerTrust;
  /** @default 5_000 (nats.js's) — how long a put, or the bucket's making, waits for the hub's answer. */
  requestTimeoutMs?: number;
  /** The hubs' levels heard (peer-versions.ts): beside a level-0 hub, as beside a level-0 peer, the keep-alive is shorter. */
  hubs?: () => Iterable<{ protocol?: number }>;
}

export class NodeDirectory {
  readonly #options: Required<Omit<NodeDirectoryOptions, "onRecord" | "onAlive" | "identity" | "trust" | "hubs">> & Pick<NodeDirectoryOptions, "onRecord" | "onAlive" | "identity" | "trust" | "hubs">;
  readonly #records = new Map<string, NodeRecord>();
  /** When each peer's record was written, on this node's clocks (record-times.ts). */
  readonly #times: RecordTimes;
  /** The certificate that signed each record used (with an identity), for a revocation that comes later. */
  readonly #certificates = new Map<string, string>();
  /** Nodes whose current record was refused, and why (shown in status, logged once per reason). */
  readonly #refused = new Map<string, string>();
  #kv: KV | undefined;
  #timer: unknown;
  #stopped = false;
  #watching = false;
  #triedCreate = false;
  #failing = false;
  #iterator: { stop(): void } | undefined;
  /** The last record put, without its time (`at`): what a look compares to. */
  #lastPut: string | undefined;
  /** The bytes of the last put, to tell this node's own value from another writer's in the watch. */
  #lastPutValue: Buffer | undefined;
  /** The bucket holds something else under this node's key than its last put. */
  #ownReplaced = false;
  #keepalive = { lastPutAt: 0, share: 1 }; // the last put (monotonic); where in the keep-alive's last quarter the next falls
  #puts = 0;
  /** The revision of this node's last put: a withdraw deletes that record only, never a newer one. */
  #ownRevision = 0;
  /** The highest revision of `mesh-nodes` seen (watched or put): a put below it finds the stream made again. */
  #highestRevision = 0;
  #watchGeneration = 0;
  /** The look under way (or the last one). */
  #looking: Promise<void> = Promise.resolve();

  constructor(options: NodeDirectoryOptions) {
    // `??`, not a spread of defaults: an option passed as undefined (the tunnel forwards its own optional
    // timings) must not erase the default — setInterval(undefined) fires every millisecond.
    this.#options = {
      ...options,
      refreshMs: options.refreshMs ?? nodeRecordRefreshMs,
      keepaliveMs: options.keepaliveMs ?? nodeRecordKeepaliveMs,
      ttlMs: options.ttlMs ?? nodeRecordTtlMs,
      random: options.random ?? Math.random,
      requestTimeoutMs: options.requestTimeoutMs ?? 5_000,
    };
    this.#times = new RecordTimes(options.clock);
  }

  start(): void {
    this.#timer = this.#options.clock.setInterval(() => void this.#refresh(), this.#options.refreshMs);
    void this.#refresh();
  }

  /** Looks at this node's record now, not at the next refresh (its addresses or NAT changed): a changed one is put at once. */
  refreshNow = (): void => void (this.#stopped || this.#refresh());

  stop(): void {
    this.#stopped = true;
    this.#options.clock.clearInterval(this.#timer);
    this.#iterator?.stop();
  }

  /**
   * Stops, and takes this node's record out of `mesh-nodes` (a KV delete of its own key): on a clean stop
   * peers drop the node at once, where a record left to expire stays listed, and paths to it are tried,
   * for up to the TTL (150 s). A look under way ends first, so its put cannot land after the delete.
   * Bounded by `timeoutMs`: with the hubs away the record is left to expire. True when it was deleted.
   * The delete names the revision this node put last: one that lands late (its answer timed out, the process
   * started again and put a new record meanwhile) fails instead of taking the new record out for a keep-alive.
   */
  async withdraw(timeoutMs = 1_000): Promise<boolean> {
    this.stop();
    const kv = this.#kv;
    if (!kv || this.#puts === 0) return false;
    try {
      await within(
        (async () => {
          await this.#looking;
          await kv.delete(this.#options.node, { previousSeq: this.#ownRevision });
        })(),
        timeoutMs,
      );
      this.#options.log.info("node record withdrawn from mesh-nodes: peers drop this node now");
      return true;
    } catch (error) {
      if (isWrongLastSequence(error)) {
        this.#options.log.info({ revision: this.#ownRevision }, "node record not withdrawn: mesh-nodes holds a newer record under this node's name (this node started again?), which stays");
        return false;
      }
      this.#options.log.info({ err: describeError(error) }, "node record not withdrawn (hub unreachable?): it expires by its TTL");
      return false;
    }
  }

  /**
   * A fresh record of a node, or undefined (unknown, or expired). While the directory cannot reach the hubs (a cloud
   * cut), no refresh can arrive: records are kept as last seen, so paths to the site's other nodes can still be (re)opened.
   */
  get(node: string): NodeRecord | undefined {
    const record = this.#records.get(node);
    if (record && !this.#failing && this.#times.ageMs(node) > this.#options.ttlMs) return undefined;
    return record;
  }

  /**
   * This node's wall clock less `node`'s, in ms, as its last record tells (the time written in it against when it was
   * written here); undefined when no record of it came. For what a peer signs with its time (punch-proof.ts).
   */
  clockOffsetOf(node: string): number | undefined {
    return this.#times.clockOffsetOf(node);
  }

  /** Asks the KV directly when the cache does not know the node yet. */
  async lookup(node: string): Promise<NodeRecord | undefined> {
    const cached = this.get(node);
    if (cached) return cached;
    const kv = this.#kv;
    if (!kv) return undefined;
    try {
      const entry = await kv.get(node);
      if (!entry || entry.operation !== "PUT" || entry.length === 0) return undefined;
      // The watch brought a newer record while the get was under way. (An older one used, if none is fresh: the stream made again.)
      if (this.#times.isOlder(node, entry.revision) && this.get(node)) return this.get(node);
      this.#times.used(node, entry.revision);
      // A node not seen before, still in the bucket, so written within its TTL: counted from now, as a record that just
      // arrived (its age by the hub's clock cannot be set against this node's). One seen before keeps its time.
      this.#times.seenNow(entry.key);
      this.#take(entry.key, entry.value);
      return this.get(node);
    } catch (error) {
      this.#options.log.debug({ err: error, peer: node }, "node record lookup failed");
      return undefined;
    }
  }

  byPeerId(peerId: string): NodeRecord | undefined {
    for (const record of this.#records.values()) if (record.peerId === peerId) return record;
    return undefined;
  }

  /** Nodes whose record is not used, and why (unsigned, another node's certificate, another CA, altered, malformed). */
  refused(): Record<string, string> {
    return Object.fromEntries(this.#refused);
  }

  /** Drops the records signed by a certificate that is now revoked; returns their nodes. */
  dropRevoked(): string[] {
    const dropped: string[] = [];
    for (const [node, certificate] of [...this.#certificates]) {
      if (!this.#options.trust?.isRevoked(certificate)) continue;
      this.#certificates.delete(node);
      this.#records.delete(node);
      this.#refused.set(node, `node record of '${node}' refused: its certificate is revoked (the mesh's revocation list)`);
      this.#options.trust.cut("node record", node);
      dropped.push(node);
    }
    return dropped;
  }

  /** Records this node has put since it started (tests read it). */
  get puts(): number {
    return this.#puts;
  }

  all(): NodeRecord[] {
    return [...this.#records.keys()].map((node) => this.get(node)).filter((record): record is NodeRecord => record !== undefined);
  }

  /** A look now, kept as the one under way. */
  #refresh = (): Promise<void> => (this.#looking = this.#look());

  async #look(): Promise<void> {
    if (this.#stopped) return;
    try {
      // checkAPI false: no `$JS.hub.API.INFO`, which a node's credentials may not publish (trust/claims.ts).
      const kvm = new Kvm(jetstream(this.#options.nats, { domain: hubDomain, checkAPI: false, timeout: this.#options.requestTimeoutMs }));
      // The hub creates the bucket (roles/hub.ts); bind to it, which sends nothing.
      this.#kv ??= await kvm.open(buckets.nodes);
      const record = this.#options.record();
      const keepaliveMs = keepaliveBeside(this.#options.keepaliveMs, [...this.all(), ...(this.#options.hubs?.() ?? [])]);
      if (this.#ownReplaced || recordContent(record) !== this.#lastPut || this.#options.clock.monotonic() >= this.#keepalive.lastPutAt + keepaliveMs * this.#keepalive.share) {
        // Cleared before the put: another writer's value seen while it is under way is put over at the next look.
        this.#ownReplaced = false;
        this.#lastPut = recordContent(await this.#put(kvm, record));
        this.#keepalive = { lastPutAt: this.#options.clock.monotonic(), share: 0.75 + 0.25 * this.#options.random() };
      }
      if (!this.#watching) await this.#watch(this.#kv);
      if (this.#failing) this.#options.log.info("node directory reachable again");
      this.#failing = false;
    } catch (error) {
      // Stopped meanwhile (a Ctrl-C right after the start): the put was cut by the stop, not by an unreachable hub.
      if (this.#stopped) {
        this.#options.log.debug({ err: describeError(error) }, "node record put ended by the stop");
        return;
      }
      // The next look puts again, whatever changed.
      this.#lastPut = undefined;
      if (!this.#failing) this.#options.log.warn({ err: describeError(error) }, "cannot publish the node record in mesh-nodes (hub unreachable?); LAN peers are still found by mDNS; retrying");
      this.#failing = true;
    }
    if (!this.#stopped) this.#options.onAlive?.(this.all());
  }

  /** Puts `record`, or, when the bucket had to be made first, the record as it is then; returns the record put. */
  async #put(kvm: Kvm, record: NodeRecord): Promise<NodeRecord> {
    try {
      this.#ownRevision = await this.#kv!.put(this.#options.node, this.#encode(record));
    } catch (error) {
      // A plain nats-server hub (the tunnel lab) has no bucket yet: create it once, where the credentials allow.
      if (this.#triedCreate) throw error;
      // Marked only once the create went through: a hub still starting (or away) is retried at the next refresh.
      this.#kv = await kvm.create(buckets.nodes, { history: 1, ttl: this.#options.ttlMs });
      this.#triedCreate = true;
      // Read again: a put that timed out (a busy hub, a leaf link cut) comes here seconds later, after later looks put newer
      // records; its own, put again, landed over them (a peer's NAT read "unknown" after "full-cone" until the next put).
      record = this.#options.record();
      this.#ownRevision = await this.#kv.put(this.#options.node, this.#encode(record));
    }
    // After a create here, and a hub that lost its store: the new stream's first put, below what the watch saw.
    this.#putAt(this.#ownRevision);
    this.#puts++;
    return record;
  }

  /** A record's value, kept as the last put: the watch may hand it back before the put's answer arrives. */
  #encode(record: NodeRecord): Buffer {
    this.#lastPutValue = Buffer.from(encodeDirectoryValue(record, this.#options.identity));
    return this.#lastPutValue;
  }

  async #watch(kv: KV): Promise<void> {
    // Marked before the watch is asked for: a look that starts while it is on its way (a slow hub; the looks do not
    // wait for each other) started a second watch, a consumer more at the hub, each time. Revisions likewise: a lookup
    // answered while it is on its way may be newer than the records it starts with.
    this.#watching = true;
    this.#times.startOver();
    const asked = this.#watchGeneration;
    let iterator: Awaited<ReturnType<KV["watch"]>>;
    try {
      iterator = await kv.watch();
    } catch (error) {
      if (asked === this.#watchGeneration) this.#watching = false;
      throw error;
    }
    const generation = ++this.#watchGeneration;
    this.#iterator = iterator;
    void (async () => {
      /** The records the bucket held when the watch began, taken together once the last has come. */
      let initial: KvWatchEntry[] = [];
      const takeInitial = () => {
        const writtenAt = this.#times.initialWrites(initial.map((entry) => entry.created));
        initial.forEach((entry, index) => this.#entry(entry, writtenAt[index]));
        initial = [];
      };
      try {
        for await (const entry of iterator as AsyncIterable<KvWatchEntry>) {
          if (this.#stopped || generation !== this.#watchGeneration) break;
          this.#highestRevision = Math.max(this.#highestRevision, entry.revision);
          if (!entry.isUpdate) {
            initial.push(entry);
            if (!entry.delta) takeInitial();
            continue;
          }
          if (initial.length > 0) takeInitial();
          this.#entry(entry, this.#options.clock.monotonic());
        }
      } catch (error) {
        this.#options.log.debug({ err: error }, "node record watch ended");
      } finally {
        if (generation === this.#watchGeneration) this.#watching = false;
      }
    })();
    if (this.#stopped) iterator.stop();
  }

  /** One entry of the bucket, written at `writtenAt` on this node's clock. */
  #entry(entry: KvWatchEntry, writtenAt: number): void {
    if (entry.key === this.#options.node) return this.#ownEntry(entry);
    if (this.#times.isOlder(entry.key, entry.revision)) return;
    this.#times.used(entry.key, entry.revision);
    if (entry.operation !== "PUT") {
      this.#records.delete(entry.key);
      this.#times.forget(entry.key);
      this.#certificates.delete(entry.key);
      this.#refused.delete(entry.key);
      return;
    }
    const fresh = this.#times.wrote(entry.key, `${entry.revision} ${entry.created.getTime()}`, writtenAt);
    this.#take(entry.key, entry.value);
    const record = this.#records.get(entry.key);
    if (fresh && record) this.#times.peerClock(entry.key, record.at);
  }

  /**
   * The revision a put of this node got back. Lower than one seen before: the bucket's stream was made
   * again (a hub that lost its store), and the watch, an ordered consumer, would wait for revisions after
   * the old stream's last, missing every record written since. It starts again from the first.
   */
  #putAt(revision: number): void {
    if (revision < this.#highestRevision && this.#watching) {
      this.#options.log.warn({ revision, highest: this.#highestRevision }, "the mesh-nodes stream was made again (a hub that lost its store?): its records are watched again from the first");
      this.#watchGeneration++;
      this.#watching = false;
      this.#iterator?.stop();
      this.#highestRevision = revision;
      return;
    }
    this.#highestRevision = Math.max(this.#highestRevision, revision);
  }

  /**
   * This node's own key as the bucket has it: anything but the last value put here (another writer's
   * value, a delete) is replaced at the next look, not at the keep-alive.
   */
  #ownEntry(entry: KvWatchEntry): void {
    const last = this.#lastPutValue;
    if (entry.operation === "PUT" && last && Buffer.from(entry.value.buffer, entry.value.byteOffset, entry.value.byteLength).equals(last)) return;
    if (!this.#ownReplaced) this.#options.log.info({ operation: entry.operation }, "this node's record in mesh-nodes is not the one it put: putting it again");
    this.#ownReplaced = true;
  }

  /** A value read under key `node`: used when it is that node's (and signed by it, with security on), else set aside and said once. */
  #take(node: string, value: Uint8Array): void {
    if (node === this.#options.node) return;
    const trust = this.#options.trust;
    const verdict = decodeDirectoryValue(node, value, this.#options.identity, (certificate) => trust?.isRevoked(certificate) ?? false);
    if (verdict.refused !== undefined) {
      this.#records.delete(node);
      this.#certificates.delete(node);
      if (verdict.revoked) trust?.refuse("node record", node);
      else if (this.#refused.get(node) !== verdict.refused) this.#options.log.warn({ peer: node, reason: verdict.refused }, "node record not used");
      this.#refused.set(node, verdict.refused);
      return;
    }
    if (this.#refused.delete(node)) this.#options.log.info({ peer: node }, "node record usable again");
    if (verdict.certificate) this.#certificates.set(node, verdict.certificate);
    else this.#certificates.delete(node);
    this.#accept(verdict.record);
  }

  #accept(record: NodeRecord): void {
    this.#records.set(record.node, record);
    this.#options.onRecord?.(record);
  }
}

/** JetStream's refusal of a write that names a revision the key is no longer at (err_code 10071). */
function isWrongLastSequence(error: unknown): boolean {
  return error instanceof Error && (/wrong last sequence/i.test(error.message) || (error as { api_error?: { err_code?: number } }).api_error?.err_code === 10071);
}
