/**
 * The mesh's NATS accounts and users as JWT claims (pure: keys in, JWT text out).
 *
 * One account per node (docs/nats-facts.md: on 2.9.10 the hub does not enforce a leaf's
 * user permissions, so only account boundaries hold against a stolen node):
 *
 * - `mesh` account: JetStream (the KV buckets live here), the catalog publisher's
 *   user, and what every node may reach, exported service by service.
 * - one account per node: no JetStream of its own at the hub, no users but the
 *   node's leaf user. It exports what only that node may say (`mesh.<node>.>`,
 *   relay frames *from* it, the rpc methods others may call on it: bus/rpc.ts) and imports only what it
 *   may use (its own `mesh-nodes` key, the catalog and node records read-only,
 *   relay frames addressed to it). Anything else it publishes dies in its account.
 * - `SYS`: the system account; its user pushes account updates (revocations).
 *
 * ```ts
 * const jwt = await nodeAccountJwt({ node: "edge-a", accountSeed, operatorSeed, meshAccount, revocations: {} });
 * ```
 */
import { encodeAccount, encodeOperator, encodeUser, type Algorithms, type Export, type Import, type OperatorLimits, type Permissions } from "@nats-io/jwt";
import { signingKey } from "./signing-keys.ts";
import { buckets, hubDomain, hubLoadRoot, meshRoot, mirrorDeliverPrefix, nodeInboxPrefix, relayRoot, rpcSubject } from "../bus/subjects.ts";
import { methodsCallableBy } from "../bus/rpc.ts";

export const algorithm = { algorithm: "ed25519-nkey" as Algorithms };

/** docs/nats-facts.md: @nats-io/jwt fills in no limits and `{}` means zero connections; say -1 explicitly. */
const unlimitedNats: OperatorLimits = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
/** The mesh account's JetStream: -1 = no account cap (the server's max_file_store still applies). */
const meshJetStream: OperatorLimits = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1, max_ack_pending: -1, mem_max_stream_bytes: -1, disk_max_stream_bytes: -1 };
/** Node accounts have no JetStream at the hub: their JetStream is their own leaf's domain. */
export const noJetStream: OperatorLimits = { mem_storage: 0, disk_storage: 0, streams: 0, consumer: 0 };

/**
 * What one node's credentials may hold open at a hub or site server. Unlimited, a stolen node's own
 * leafnode client sent 200,000 subscriptions in 1.5 s and took a hub from 14 to 197 MB (nothing else
 * checks a leaf's subscriptions but their count), and opened 300 leaf connections with no refusal.
 *
 * - `subs` is per connection (nats-server applies the smaller of the user's and the account's
 *   limit to each): @default 1024 — an honest agent's leaf holds 13 at its hub (its inbox,
 *   rpc methods, relay frames, two mirrors), a site's member remote about as many. Beyond it the
 *   server answers "Maximum Subscriptions Exceeded" and drops the subscription.
 * - `leaf` is per account, counted over the servers that share the system account: @default 16 —
 *   one for the agent, one per server of its site (up to three), and room for connections that a
 *   reconnect leaves behind until they time out.
 *
 * So a stolen node holds at most 16 × 1024 subscriptions (about 15 MB at a hub) and 16 connections.
 */
export const nodeConnectionLimits = { subs: 1024, leaf: 16 } as const satisfies OperatorLimits;

export const meshAccountName = "mesh";
export const systemAccountName = "SYS";

export function nodeAccountName(node: string): string {
  return `node-${node}`;
}

export { mirrorDeliverPrefix, nodeInboxPrefix } from "../bus/subjects.ts";

const catalogStream = `KV_${buckets.catalog}`;
/** The one rpc method a node may call on its peers (services/tunnel asks a peer to punch). */
/** Methods a node answers for callers outside it (bus/rpc.ts): the hubs' and its peers'. */
const peerMethods = methodsCallableBy("peers");
const servedToOthers = [...new Set([...methodsCallableBy("hub"), ...peerMethods])];
const nodesStream = `KV_${buckets.nodes}`;
const revocationsStream = `KV_${buckets.revocations}`;

/**
 * JetStream API subjects a node may call in the mesh account, as the hub sees
 * them after its domain mapping (`$JS.hub.API.X` → `$JS.API.X`; docs/nats-facts.md: the
 * import subjects must be the mapped names).
 */
function readOnlyKvApi(stream: string): string[] {
  return [
    `$JS.API.CONSUMER.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
  ];
}

/**
 * `$JS.API.INFO`, imported by every node account from the mesh account, for what it shuts out.
 *
 * nats-server 2.9.10 gives an account without JetStream a service import of the whole `$JS.API.>`
 * from the system account (jetstream.go `enableJetStreamInfoServiceImportOnly`, so that such an
 * account's clients hear "JetStream not enabled"), unless the account already imports
 * `$JS.API.INFO` from elsewhere. Through that import a node reached every system-account handler of
 * the JetStream API, among them `$JS.API.ACCOUNT.PURGE.<account>`, which checks nothing about who
 * asks: one message from a stolen node's credentials naming the mesh account deleted the catalog, the
 * node records and the leases (measured, trust/attacks.test.ts). With its own `$JS.API.INFO` import
 * the node account gets no system import at all: JetStream calls it does not import from the mesh
 * account reach nothing. The cost: INFO answers with the mesh account's JetStream usage (stream and
 * consumer counts, storage), which tells a node nothing it could act on.
 */
export const jetStreamInfoApi = "$JS.API.INFO";

const sharedServices = [...readOnlyKvApi(catalogStream), ...readOnlyKvApi(nodesStream), ...readOnlyKvApi(revocationsStream), "$JS.FC.>", jetStreamInfoApi];

export function service(subject: string, account?: string): Export & Import {
  return { name: subject, subject, type: "service", account: account ?? "" };
}
function stream(subject: string, account?: string): Export & Import {
  return { name: subject, subject, type: "stream", account: account ?? "" };
}
const exportOf = ({ account: _account, ...rest }: Export & Import): Export => rest;

export interface NodeAccountRef {
  node: string;
  /**
   * The site this node is a server of, when the site's name is not the node's own: the site's
   * clustered catalog mirror delivers under the site's prefix (mirrorDeliverPrefix(site)), which
   * every server of the site must receive, whichever of them leads the mirror.
   */
  site?: string;
  /** The account's public nkey (A...). */
  account: string;
}

export async function operatorJwt(options: { operatorSeed: string; systemAccount: string; name?: string }): Promise<string> {
  return encodeOperator(options.name ?? "leafmesh", signingKey(options.operatorSeed), { system_account: options.systemAccount }, algorithm);
}

/** The system account: it exports the claim updates to `site-claims` (trust/site-claims.ts), so no site holds a user of it. */
export async function systemAccountJwt(options: { operatorSeed: string; accountSeed: string; revocations?: Record<string, number> }): Promise<string> {
  const exports: Export[] = ["$SYS.REQ.CLAIMS.UPDATE", "$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE"].map((subject) => exportOf(stream(subject)));
  return encodeAccount(
    systemAccountName,
    signingKey(options.accountSeed),
    { limits: { ...unlimitedNats, ...noJetStream }, exports, revocations: options.revocations ?? {} },
    { ...algorithm, signer: signingKey(options.operatorSeed) },
  );
}

/** The mesh account: re-signed whenever a node is issued (it imports from every node account). */
export async function meshAccountJwt(options: { operatorSeed: string; accountSeed: string; nodes: NodeAccountRef[]; revocations?: Record<string, number> }): Promise<string> {
  const exports: Export[] = [
    ...sharedServices.map((subject) => exportOf(service(subject))),
    exportOf(service(`$KV.${buckets.nodes}.>`)),
    // The hubs' relay load, read by every node's relay choice (bus/subjects.ts hubLoadSubject); published by hubs only.
    exportOf(stream(`${hubLoadRoot}.*`)),
    // Replies and mirror deliveries (a node's mirror delivers under its inbox prefix: mirrorDeliverPrefix); each node imports only its own.
    ...options.nodes.map(({ node }) => exportOf(stream(`${nodeInboxPrefix(node)}.>`))),
    ...[...new Set(options.nodes.flatMap(({ site }) => (site ? [site] : [])))].map((site) => exportOf(stream(`${mirrorDeliverPrefix(site)}.>`))),
  ];
  const imports: Import[] = options.nodes.flatMap(({ node, account }) => [
    stream(`${meshRoot}.${node}.>`, account) as Import,
    // The node's rpc methods, for the hubs' side: which of them reach the node is decided by the node
    // user's subscribe list, written from bus/rpc.ts. Not one import per method: a literal service
    // import is interest a consumer can deliver to (consumer.go checks literal interest), so the
    // mesh account's consumers, which a stolen node may create, could push catalog entries into
    // another node's status handler (the attack suite saw it).
    service(`rpc.${node}.>`, account) as Import,
  ]);
  return encodeAccount(
    meshAccountName,
    signingKey(options.accountSeed),
    { limits: { ...unlimitedNats, ...meshJetStream }, exports, imports, revocations: options.revocations ?? {} },
    { ...algorithm, signer: signingKey(options.operatorSeed) },
  );
}

/**
 * A node's account. Relay frames go straight from account to account
 * (`relay.<to>.<from>.>` imported by <to> from <from>'s export `relay.*.<from>.>`):
 * through the mesh account the chain A → mesh → A overlaps and nats-server 2.9.10
 * drops such imports without a word (measured), so every node account lists its
 * peers and is re-signed when a node joins.
 */
export async function nodeAccountJwt(options: {
  node: string;
  operatorSeed: string;
  accountSeed: string;
  meshAccount: string;
  /** The other nodes: relay frames from them addressed to this node are imported. */
  peers: NodeAccountRef[];
  /** The site this node is a server of (NodeAccountRef.site). */
  site?: string;
  revocations?: Record<string, number>;
}): Promise<string> {
  const { node, meshAccount } = options;
  const exports: Export[] = [
    exportOf(stream(`${meshRoot}.${node}.>`)),
    // Only frames that name this node as the sender leave its account: it cannot forge another sender.
    exportOf(stream(`${relayRoot}.*.${node}.>`)),
    // Its rpc methods (see meshAccountJwt: the node user's subscribe list admits only those of bus/rpc.ts).
    exportOf(service(`rpc.${node}.>`)),
  ];
  const imports: Import[] = [
    ...sharedServices.map((subject) => service(subject, meshAccount) as Import),
    service(`$KV.${buckets.nodes}.${node}`, meshAccount) as Import,
    ...options.peers.filter((peer) => peer.node !== node).map((peer) => stream(`${relayRoot}.${node}.${peer.node}.>`, peer.account) as Import),
    // Hole punching is agreed by request/reply with the peer (services/tunnel): only that one method of each peer.
    ...options.peers.filter((peer) => peer.node !== node).flatMap((peer) => peerMethods.map((name) => service(rpcSubject(peer.node, name), peer.account) as Import)),
    stream(`${nodeInboxPrefix(node)}.>`, meshAccount) as Import,
    stream(`${hubLoadRoot}.*`, meshAccount) as Import,
    ...(options.site ? [stream(`${mirrorDeliverPrefix(options.site)}.>`, meshAccount) as Import] : []),
  ];
  return encodeAccount(
    nodeAccountName(node),
    signingKey(options.accountSeed),
    { limits: { ...unlimitedNats, ...nodeConnectionLimits, ...noJetStream }, exports, imports, revocations: options.revocations ?? {} },
    { ...algorithm, signer: signingKey(options.operatorSeed) },
  );
}

/**
 * What a node publishes towards the hub: its leaf server forwards nothing else (it holds an honest
 * agent to its subjects and makes its mistakes local; the account boundary is what holds against a
 * stolen key). Its local clients' permissions (localClientPermissions) start from this list too.
 */
function nodePublishSubjects(node: string): string[] {
  const api = `$JS.${hubDomain}.API`;
  // Read-only calls in any domain: the hubs' (hub) or an edge site's (its name), where an agent behind a site mirrors from.
  const readApi = (stream: string) => readOnlyKvApi(stream).map((subject) => subject.replace("$JS.API", "$JS.*.API"));
  return [
    `${meshRoot}.${node}.>`,
    `${relayRoot}.*.${node}.>`,
    // asking a peer to punch (imported per peer by the node's account)
    ...peerMethods.map((name) => rpcSubject("*", name)),
    `${api}.$KV.${buckets.nodes}.${node}`,
    `${api}.INFO`,
    ...readApi(catalogStream),
    ...readApi(nodesStream),
    ...readApi(revocationsStream),
    "$JS.FC.>",
    // replies to requests that reached this node (rpc.<node>.>) through the mesh account
    "_R_.>",
    "_INBOX.>",
    // The leafnode loop-detection subscription (`$LDS.<id>`) each leaf makes at connect. 2.9.10 checks a
    // leaf's literal subscriptions (docs/nats-facts.md) and, measured, against this list: without it a hub logged
    // "Permissions Violation for Subscription to $LDS..." for every remote of a site at every connect.
    "$LDS.>",
  ];
}

/** What a node's leaf subscribes to at the hub: what is addressed to it, and nothing of another node's. */
function nodeSubscribeSubjects(node: string, site?: string): string[] {
  return [
    ...(site ? [`${mirrorDeliverPrefix(site)}.>`] : []),
    `${relayRoot}.${node}.>`,
    ...servedToOthers.map((name) => rpcSubject(node, name)),
    `${nodeInboxPrefix(node)}.>`,
    // the hubs' relay load (relay choice)
    `${hubLoadRoot}.*`,
    "$JSC.R.>",
    "_INBOX.>",
    // and here too, for servers that check the subscribe side (see pub above)
    "$LDS.>",
  ];
}

/**
 * The node user's permissions (in its user JWT). The publish list is what the node publishes
 * PLUS everything it subscribes to, because of how nats-server 2.9.10 re-checks a connected leaf:
 *
 * - A hub swaps an accepted leaf's permissions (leafnode.go: data flows the other way), so the
 *   leaf's subscriptions are admitted against the user's *subscribe* list when they are made.
 * - When an account JWT is updated and the account's stream imports change, or an account it
 *   imports a stream from changes its stream exports (as issuing a node does: every node account
 *   gains the new node's relay import, the mesh account its inbox export), the hub re-checks every
 *   subscription of every connection in those accounts with `canSubscribe`
 *   (client.go `processSubsOnConfigReload`), which for a leaf reads the swapped list: the user's
 *   *publish* list. Subscriptions it does not cover are dropped at the hub with "Permissions
 *   Violation for Subscription" sent to the leaf, and the node stops receiving rpc, relay frames,
 *   JetStream replies and mirror deliveries (measured: issuing one node broke every running agent).
 *
 * With the subscribe subjects in the publish list too, both checks give the same answer, so an
 * account update (issue, revoke, a hub config reload) leaves connected leaves as they were. What
 * this adds to what an honest leaf may forward is its own inbound subjects, which reach nothing
 * outside its account (it exports only `mesh.<node>.>`, `relay.*.<node>.>` and `rpc.<node>.>`),
 * and its local clients stay held to the narrower list (localClientPermissions).
 */
export function nodeUserPermissions(node: string, site?: string): Permissions {
  const subscribed = nodeSubscribeSubjects(node, site);
  return {
    pub: { allow: [...new Set([...nodePublishSubjects(node), ...subscribed])] },
    sub: { allow: subscribed },
  };
}

export async function nodeUserJwt(options: { node: string; /** The user's seed, or (enrolment: the key pair stays on the node) its public key. */ userSeed: string; accountSeed: string; expires?: number; site?: string }): Promise<string> {
  return encodeUser(
    options.node,
    signingKey(options.userSeed),
    signingKey(options.accountSeed),
    { ...nodeUserPermissions(options.node, options.site), subs: -1, data: -1, payload: -1, allowed_connection_types: ["LEAFNODE"] },
    { ...algorithm, ...(options.expires ? { exp: options.expires } : {}) },
  );
}

/** A user with the whole mesh account (the hub's catalog publisher, operators' tools). */
export async function meshUserJwt(options: { name: string; userSeed: string; accountSeed: string }): Promise<string> {
  return encodeUser(options.name, signingKey(options.userSeed), signingKey(options.accountSeed), { subs: -1, data: -1, payload: -1 }, algorithm);
}

/**
 * The local user of a secured site server's own leafmesh process: the mesh account, as the
 * site's JetStream lives there, but only from loopback and as an ordinary client, so the same
 * credentials are of no use against a hub or from another machine.
 */
export async function siteLocalUserJwt(options: { site: string; userSeed: string; accountSeed: string }): Promise<string> {
  return encodeUser(`site-${options.site}-local`, signingKey(options.userSeed), signingKey(options.accountSeed), { subs: -1, data: -1, payload: -1, src: ["127.0.0.1/32", "::1/128"], allowed_connection_types: ["STANDARD"] }, algorithm);
}

export async function systemUserJwt(options: { userSeed: string; accountSeed: string }): Promise<string> {
  return encodeUser("sys", signingKey(options.userSeed), signingKey(options.accountSeed), { subs: -1, data: -1, payload: -1 }, algorithm);
}

/**
 * What a client of the agent's OWN nats-server may publish (its local auth
 * user). The leaf remote's permissions do not cover leaf-local clients
 * (docs/nats-facts.md), and a violation here is answered and logged by that server
 * ("Publish Violation"), so an agent that oversteps sees why at once.
 */
export function localClientPermissions(node: string): { publish: { allow: string[] }; subscribe: { allow: string[] } } {
  return {
    publish: {
      allow: [
        ...nodePublishSubjects(node),
        // the leaf's own JetStream (its domain = the node name) and its KV mirrors
        "$JS.API.>",
        `$JS.${node}.API.>`,
        "$JS.ACK.>",
        `${nodeInboxPrefix(node)}.>`,
        // its own methods for its own processes (bus/rpc.ts)
        ...methodsCallableBy("local").map((name) => rpcSubject(node, name)),
        // The node directory watches mesh-nodes in the hub's domain with an ordered consumer; when the hub is
        // away its heartbeats stop, and nats.js resets it by deleting the old consumer first. Refused here, that
        // was a "Publish Violation" at error level every few seconds of a cut. Allowed here only: the leaf does
        // not pass it to the hub (not in the remote's permissions), where the consumer expires by itself.
        `$JS.*.API.CONSUMER.DELETE.${nodesStream}.>`,
      ],
    },
    subscribe: { allow: [">"] },
  };
}

/** Subjects the hub's auditor watches inside a node's account: anything here that is not the node's own is an attempt to overstep. */
export const auditSubjects = [`${meshRoot}.>`, "rpc.>", "$JS.API.>", `$JS.${hubDomain}.API.>`, "$KV.>", "$SYS.REQ.>"];

/** The hub's auditor in a node's account: may only listen (standard connection, publishes nothing). */
export async function auditUserJwt(options: { node: string; userSeed: string; accountSeed: string }): Promise<string> {
  return encodeUser(
    `audit-${options.node}`,
    signingKey(options.userSeed),
    signingKey(options.accountSeed),
    { pub: { deny: [">"] }, sub: { allow: auditSubjects }, subs: -1, data: -1, payload: -1, allowed_connection_types: ["STANDARD"] },
    algorithm,
  );
}

/**
 * Why a subject seen in `node`'s account oversteps, or undefined when it is the
 * node's own business. Pure, so the rules are tested without servers.
 */
export function oversteppingReason(node: string, subject: string): string | undefined {
  const tokens = subject.split(".");
  if (tokens[0] === meshRoot) return tokens[1] === node ? undefined : `publishes as node '${tokens[1]}' (only ${meshRoot}.${node}.> is its own)`;
  if (tokens[0] === "rpc") {
    // Its own rpc (a local call its leaf forwarded), and a peer's punch method (imported per peer), are its business.
    const name = tokens.slice(2).join(".");
    if (tokens[1] === node || peerMethods.includes(name)) return undefined;
    return `calls rpc.${tokens[1]}.${name} (nodes answer rpc; of other nodes they may only call ${peerMethods.join(", ")})`;
  }
  if (tokens[0] === "$KV") {
    if (tokens[1] === buckets.nodes && tokens[2] === node && tokens.length === 3) return undefined;
    if (tokens[1] === buckets.catalog) return `writes the catalog (key ${tokens.slice(2).join(".")}): only the hub's publisher may`;
    if (tokens[1] === buckets.nodes) return `writes the node record of '${tokens.slice(2).join(".")}' (only its own, ${node})`;
    return `writes KV bucket ${tokens[1]}`;
  }
  if (tokens[0] === "$JS") {
    const api = tokens[1] === "API" ? tokens.slice(2) : tokens.slice(3);
    const call = api.join(".");
    if (api[0] === "$KV") return oversteppingReason(node, call);
    const allowed = [...readOnlyKvApi(catalogStream), ...readOnlyKvApi(nodesStream), ...readOnlyKvApi(revocationsStream), jetStreamInfoApi].some((pattern) => subjectMatches(pattern.replace("$JS.API.", ""), call));
    if (allowed) return undefined;
    if (call.includes(catalogStream)) return `calls JetStream ${call} on the catalog (read-only for nodes)`;
    return `calls JetStream ${call} in the hub domain (not allowed for nodes)`;
  }
  if (tokens[0] === "$SYS") return `sends system request ${subject}`;
  return undefined;
}

/** NATS subject matching with * and >. */
export function subjectMatches(pattern: string, subject: string): boolean {
  const patternTokens = pattern.split(".");
  const subjectTokens = subject.split(".");
  for (let index = 0; index < patternTokens.length; index++) {
    const token = patternTokens[index];
    if (token === ">") return subjectTokens.length > index;
    if (index >= subjectTokens.length) return false;
    if (token !== "*" && token !== subjectTokens[index]) return false;
  }
  return patternTokens.length === subjectTokens.length;
}
