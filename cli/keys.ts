/**
 * `leafmesh keys`: the mesh's root of trust from the command line.
 *
 *   leafmesh keys init   --dir D [--hub-hosts h1,10.0.0.5]
 *   leafmesh keys issue  --dir D --node N [--hosts ...] [--expires 2027-01-01T00:00:00Z] [--rotate] [--hub tls://hub:4222]
 *   leafmesh keys list   --dir D [--json]
 *   leafmesh keys revoke --dir D --node N [--hub tls://hub:4222,...]
 *   leafmesh keys issue-site --dir D --site S --members n1,n2 [--servers s1,s2,s3] [--hosts ...] [--hub ...]
 *   leafmesh keys resign --dir D [--hub tls://hub:4222,...]
 *   leafmesh keys hub-cert --dir D [--hub-hosts h1,10.0.0.5]
 *   leafmesh keys push   --dir D --hub tls://hub:4222,...
 *   leafmesh keys token  --dir D --url tls://hub:4222 [--ttl 24h] [--uses 50] [--site S] [--tags a,b] [--out FILE] [--hub ...]
 *   leafmesh keys tokens --dir D [--json]
 *   leafmesh keys revoke --dir D --token ID
 *   leafmesh keys k8s-secret --dir D [--part hubs|all] [--name N] [--namespace NS] [--out FILE]   (cli/keys-secret.ts)
 *
 * Prints paths and public keys only: seeds, creds and keys never reach
 * stdout, stderr or a log.
 *
 * ```ts
 * const code = await runKeysCommand(["issue", "--dir", dir, "--node", "edge-a"], { stdout: process.stdout, stderr: process.stderr });
 * ```
 */
import { commandSummaries } from "./command-list.ts";
import { join } from "node:path";
import { usableDirectory } from "./server-options.ts";
import { defineCommand, splitList, type Command } from "./command.ts";
import { publishList, pushRevocation, pushTo } from "./keys-push.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { allAccountJwts, certificateEnds, initKeys, listNodes, readKeyState, resignAccounts } from "../trust/key-store.ts";
import { issueNode, readSignedRevocationList, revokeNode } from "../trust/node-credentials.ts";
import { issueSite } from "../trust/site-store.ts";
import { checkCertificateHosts } from "../trust/tls.ts";
import { certificateHosts, reissueHubCertificate } from "../trust/hub-certificate.ts";
import { readFileSync } from "node:fs";
import { createToken, revokeToken } from "../trust/enrolment.ts";
import { listTokens, parseDuration } from "../trust/tokens.ts";
import { writeSecretFile } from "../trust/secret-files.ts";
import { k8sSecretCommand } from "./keys-secret.ts";

const dirOption = { type: "string", value: "DIR", required: true, description: "the mesh's keys directory (created 0700 by `keys init`)" } as const;
const hubOption = {
  type: "string",
  value: "URLS",
  description: "client URLs of running hubs (tls://host:4222, comma-separated): push the changed accounts to them now, so the change applies without a restart",
} as const;

const initCommand = defineCommand({
  name: "keys init",
  summary: "create the mesh's root of trust: NATS operator and accounts, a TLS CA and the hubs' certificate, the libp2p pre-shared key",
  description: `
Creates DIR (0700) with every secret 0600. Refuses to overwrite an existing
mesh. Give the hubs' host names and addresses with --hub-hosts so that nodes can
verify the hubs' certificate. Copy DIR/hub/ to the hubs; keep DIR/ca/ca.key and
the seeds offline when you can.`,
  options: {
    dir: dirOption,
    hubHosts: { type: "string", value: "HOSTS", default: "localhost,127.0.0.1,::1", description: "names and IPs in the hubs' TLS certificate: every name and address agents and sites dial the hubs by (the hubs themselves need none of them)" },
  },
  async run(values, _positionals, io) {
    // The directory itself (under /proc, below a file, read-only) is said as a bad --dir, not as a crash; made
    // private, as initKeys would make it.
    usableDirectory("--dir", values.dir, 0o700);
    const hubHosts = splitList(values.hubHosts);
    checkCertificateHosts(hubHosts, "--hub-hosts");
    const state = await initKeys({ dir: values.dir, hubHosts });
    io.stdout.write(
      [
        `mesh keys created in ${values.dir}`,
        `  operator        ${state.operator}`,
        `  system account  ${state.systemAccount}`,
        `  mesh account    ${state.meshAccount}`,
        `  CA              ${join(values.dir, "ca", "ca.crt")}`,
        `  pre-shared key  ${join(values.dir, "swarm.key")}`,
        `next: leafmesh keys issue --dir ${values.dir} --node <name>`,
        "",
      ].join("\n"),
    );
    return 0;
  },
});

const issueCommand = defineCommand({
  name: "keys issue",
  summary: "issue a node's identity: NATS credentials (a new key every time), TLS certificate and key, CA, pre-shared key",
  description: `
Writes DIR/nodes/NODE/ (node.creds, node.crt, node.key, ca.crt, swarm.key), to
copy to that node and pass to 'leafmesh agent --keys'. The first issue of a node
creates its NATS account and re-signs the others (they import its relay frames):
push them to running hubs with --hub. A node that has credentials is refused:
give --rotate to revoke them (key and certificate, as 'keys revoke' does) and
issue new ones in one step; its running agent is cut off until it has the new
bundle. Issuing again after a revoke makes a new key: a revoked key never comes
back.`,
  options: {
    dir: dirOption,
    node: { type: "string", value: "NODE", required: true, description: "the node name (a DNS label)" },
    hosts: { type: "string", value: "HOSTS", description: "names and IPs in the node's TLS certificate (default: the node name)" },
    expires: { type: "string", value: "TIME", description: "when the NATS credentials expire (ISO 8601); default: never, revoke instead" },
    rotate: { type: "boolean", description: "the node has credentials: revoke them and issue new ones (without it such a node is refused)" },
    hub: hubOption,
  },
  async run(values, _positionals, io) {
    let expires: number | undefined;
    if (values.expires) {
      const at = Date.parse(values.expires);
      if (Number.isNaN(at)) throw new LeafmeshError("CONFIG_INVALID", `--expires: '${values.expires}' is not an ISO 8601 time (for example 2027-01-01T00:00:00Z)`);
      // The wall clock: credentials end at a date.
      if (at <= Date.now()) throw new LeafmeshError("CONFIG_INVALID", `--expires: ${new Date(at).toISOString()} is in the past: every hub would refuse these credentials from the start`);
      expires = Math.floor(at / 1000);
    }
    const hosts = splitList(values.hosts);
    checkCertificateHosts(hosts, "--hosts");
    const result = await issueNode({ dir: values.dir, node: values.node, hosts: hosts.length > 0 ? hosts : undefined, expires, rotate: values.rotate });
    if (values.rotate && !result.revoked) io.stdout.write(`node ${values.node} had no current credentials: nothing to revoke\n`);
    io.stdout.write(
      [
        ...(result.revoked ? [`node ${values.node}: user key ${result.revoked.revokedUser} revoked, its certificate is on the revocation list`] : []),
        `node ${values.node} issued: bundle ${result.bundleDir}`,
        `  account ${result.node.account}`,
        `  user    ${result.node.user}${result.node.expiresAt ? ` (expires ${result.node.expiresAt})` : ""}`,
        "",
      ].join("\n"),
    );
    if (result.changedAccounts.length > 0) await pushTo(values.dir, values.hub, result.changedAccounts, io);
    if (result.revoked) await pushRevocation(values.dir, values.hub, values.node, result.revoked, io);
    return 0;
  },
});

const listCommand = defineCommand({
  name: "keys list",
  summary: "list the nodes issued in a keys directory, with their status (active, expired, revoked)",
  options: { dir: dirOption, json: { type: "boolean", description: "print JSON instead of a table" } },
  async run(values, _positionals, io) {
    const nodes = listNodes(values.dir);
    if (values.json) {
      io.stdout.write(`${JSON.stringify(nodes, null, 2)}\n`);
      return 0;
    }
    const rows = [
      ["NODE", "STATUS", "USER KEY", "ISSUED", "EXPIRES", "CERTIFICATE ENDS", "REVOKED KEYS", "JOINED WITH"],
      ...nodes.map((node) => [
        node.node, node.status, node.user ?? "-", node.issuedAt, node.expiresAt ?? "never", node.certificateEnds ?? "-", String(node.revokedKeys),
        node.enrolledBy ? `token ${node.enrolledBy}${node.site ? ` site=${node.site}` : ""}${node.tags?.length ? ` tags=${node.tags.join(",")}` : ""}` : "-",
      ]),
    ];
    const widths = rows[0].map((_cell, column) => Math.max(...rows.map((row) => row[column].length)));
    for (const row of rows) io.stdout.write(`${row.map((cell, column) => cell.padEnd(widths[column])).join("  ").trimEnd()}\n`);
    const hubCertificate = join(values.dir, "hub", "hub.crt");
    const hubEnds = certificateEnds(hubCertificate);
    if (hubEnds) io.stdout.write(`\nhub certificate ${hubCertificate}: ends ${hubEnds}, names ${certificateHosts(readFileSync(hubCertificate)).join(", ")} (issue it again with leafmesh keys hub-cert)\n`);
    return 0;
  },
});

const revokeCommand = defineCommand({
  name: "keys revoke",
  summary: "revoke a node's current credentials and push the change to running hubs: its connections close within seconds",
  description: `
Adds the node's user key to its account's revocations (its node.creds are dead
from then on, wherever copies are) and its certificate to the mesh's revocation
list (DIR/hub/revocations.json, signed by the CA). With --hub the account update
is pushed through the system account at once (no hub restart): the node's leaf
connection is closed and its relayed streams end; and the list is published to
the hubs, from where every agent mirrors it: its peers refuse the certificate at
the TLS handshake (also on the LAN, also while cut off from the hubs) and cut
its open streams. Other nodes are not touched. The node can be issued again
later (with a new key and certificate).`,
  options: {
    dir: dirOption,
    node: { type: "string", value: "NODE", description: "the node to revoke" },
    token: { type: "string", value: "ID", description: "or: the join token to revoke (see keys tokens): the enrolling hub refuses it from then on, saying so, and its credentials are revoked at the hubs (pushed with --hub), where a keys directory restored from an older backup cannot undo it; nodes that joined with it keep running" },
    hub: hubOption,
  },
  async run(values, _positionals, io) {
    if (Boolean(values.node) === Boolean(values.token)) throw new LeafmeshError("CONFIG_INVALID", "give --node NODE or --token ID (one of them)");
    if (values.token) {
      const { token, accountJwt } = await revokeToken({ dir: values.dir, id: values.token });
      io.stdout.write(`token ${token.id} revoked at ${token.revokedAt}: ${token.used.length} node${token.used.length === 1 ? "" : "s"} joined with it (${token.used.map((use) => use.node).join(", ") || "none"}); revoke them with --node if they must go too\n`);
      // Its user in the enrol account: the hubs keep that revocation, also against a keys directory restored from an older backup.
      await pushTo(values.dir, values.hub, [accountJwt], io);
      return 0;
    }
    const node = values.node!;
    const result = await revokeNode({ dir: values.dir, node });
    io.stdout.write(`node ${node}: user key ${result.revokedUser} revoked, its certificate is on the revocation list\n`);
    await pushRevocation(values.dir, values.hub, node, result, io);
    return 0;
  },
});

const issueSiteCommand = defineCommand({
  name: "keys issue-site",
  summary: "issue an edge site's bundle: its servers' identities, a user in each member node's account, TLS, the accounts to check agents with",
  description: `
Writes DIR/sites/SITE/, to copy to the site's servers and pass to 'leafmesh site
--keys'. Each server is issued as a node of its own (first time only; push the
changed accounts with --hub). The members are issued nodes whose agents attach
to this site; the site holds a user in each one's account, so per-node isolation
holds through the site and relayed streams between members stay on it. Run it
again when the members change and copy DIR/sites/SITE/ over the servers' copy:
each running server takes it by itself, starting again in place, one server of
a site cluster at a time.
A stolen site bundle lets its holder act for the site's members and read the
catalog; it cannot write the catalog or act for nodes of other sites.`,
  options: {
    dir: dirOption,
    site: { type: "string", value: "SITE", required: true, description: "the site name (its JetStream domain; a DNS label)" },
    members: { type: "string", value: "NODES", required: true, description: "issued nodes whose agents attach to this site (comma-separated)" },
    servers: { type: "string", value: "NAMES", description: "the site's server names, as given to 'leafmesh site --server' (default: the site name)" },
    hosts: { type: "string", value: "HOSTS", description: "names and IPs in the site's TLS certificate, what its agents dial (default: the site name, localhost, 127.0.0.1, ::1)" },
    hub: hubOption,
  },
  async run(values, _positionals, io) {
    const hosts = splitList(values.hosts);
    checkCertificateHosts(hosts, "--hosts");
    const result = await issueSite({ dir: values.dir, site: values.site, members: splitList(values.members), servers: splitList(values.servers), hosts: hosts.length > 0 ? hosts : undefined });
    io.stdout.write(
      [
        `site ${values.site} issued: bundle ${result.bundleDir}`,
        `  servers ${result.site.servers.join(", ")}`,
        `  members ${result.site.members.join(", ") || "(none)"}`,
        "",
      ].join("\n"),
    );
    if (result.changedAccounts.length > 0) await pushTo(values.dir, values.hub, result.changedAccounts, io);
    return 0;
  },
});

const resignCommand = defineCommand({
  name: "keys resign",
  summary: "sign every account again with this leafmesh's rules (after an upgrade) and push them to running hubs",
  description: `
Signs the mesh account and every node account again, keeping their revocations;
node credentials stay as they are. Needed once for keys an older leafmesh made:
their node accounts let a stolen node purge the mesh's JetStream, or hold
unbounded subscriptions and leaf connections at a hub (hubs warn at start). With --hub the accounts are pushed at once; without, hubs apply them at
their next start.`,
  options: { dir: dirOption, hub: hubOption },
  async run(values, _positionals, io) {
    const jwts = await resignAccounts(values.dir);
    io.stdout.write(`${jwts.length} accounts signed again in ${values.dir}\n`);
    await pushTo(values.dir, values.hub, jwts, io);
    return 0;
  },
});

const hubCertCommand = defineCommand({
  name: "keys hub-cert",
  summary: "issue the hubs' TLS certificate again: before it ends (825 days after keys init), or for host names it does not list",
  description: `
Writes a new key and certificate to DIR/hub/ (hub.key, hub.crt), signed by the
mesh CA, for --hub-hosts, or for the names and addresses the current certificate
lists. The CA stays: nodes and sites keep their bundles. Copy DIR/hub/ to each
hub: a running hub takes the new files by itself, starting again in place; the
hubs of a cluster take turns, one at a time, however the copies land.`,
  options: {
    dir: dirOption,
    hubHosts: { type: "string", value: "HOSTS", description: "names and IPs in the new certificate: every name and address agents and sites dial the hubs by (default: those of the current certificate)" },
  },
  async run(values, _positionals, io) {
    const hosts = values.hubHosts === undefined ? undefined : splitList(values.hubHosts);
    const result = await reissueHubCertificate({ dir: values.dir, hosts });
    io.stdout.write(
      [
        `hub certificate issued again: ${result.certFile}`,
        `  hosts      ${result.hosts.join(", ")}`,
        `  not after  ${new Date(result.notAfter).toISOString()}`,
        `next: copy ${join(values.dir, "hub")}/ to each hub: each starts again with it (the hubs of a cluster one at a time, by themselves)`,
        "",
      ].join("\n"),
    );
    return 0;
  },
});

const pushCommand = defineCommand({
  name: "keys push",
  summary: "push what the keys directory holds now (every account, the revocation list) to running hubs: after a push that failed, or to a hub started from an older copy",
  description: `
Pushes every account JWT of DIR through the system account, and publishes the
mesh's signed revocation list, to the hubs given with --hub. Nothing in DIR
changes. Use it when 'keys revoke', 'issue' or 'issue-site' could not reach a
hub (the change was kept in DIR), or for hubs started from an older copy of
the keys. Hubs keep a newer revocation list over an older one.`,
  options: { dir: dirOption, hub: { ...hubOption, required: true } },
  async run(values, _positionals, io) {
    const servers = splitList(values.hub);
    const jwts = allAccountJwts(values.dir).map((entry) => entry.jwt);
    await pushTo(values.dir, values.hub, jwts, io, false);
    const signed = readSignedRevocationList(values.dir);
    if (!signed) {
      io.stdout.write("no revocation list in the keys directory (nothing was ever revoked)\n");
      return 0;
    }
    const version = await publishList(values.dir, servers, signed, io, false);
    io.stdout.write(`revocation list version ${version} published to the hubs\n`);
    return 0;
  },
});

const tokenCommand = defineCommand({
  name: "keys token",
  summary: "make a join token: nodes started with 'leafmesh agent --join TOKEN' get their own identity from the enrolling hub, up to --uses nodes until --ttl",
  description: `
Prints the token (or writes it 0600 to --out): it is a secret, for the nodes
that should join (a Kubernetes Secret for a DaemonSet). A node joining with it
makes its own keys, proves the token to a hub started with --enrol (the hub
that holds this keys directory), and gets credentials and a certificate for
its own node name only. A used-up, expired or revoked token is refused with
the reason. The first token also sets up enrolment (the enrol account, the
enrolment CA): push the changed accounts with --hub, and restart the hubs
whose client port joining nodes use, or start them with --enrol.`,
  options: {
    dir: dirOption,
    url: { type: "string", value: "URLS", required: true, description: "client URLs of the hubs that serve enrolment (leafmesh hub --enrol), written into the token, e.g. tls://hub-1.example.net:4222" },
    ttl: { type: "string", value: "DURATION", default: "24h", description: "how long the token can be used (s, m, h or d: 30m, 24h, 7d); nodes that joined keep their identity after it" },
    uses: { type: "string", value: "N", default: "1", description: "how many nodes may join with it" },
    site: { type: "string", value: "SITE", description: "the edge site its nodes belong to (their --site, recorded with them)" },
    tags: { type: "string", value: "TAGS", description: "labels recorded with its nodes (comma-separated), shown by keys list" },
    out: { type: "string", value: "FILE", description: "write the token to FILE (0600) instead of printing it" },
    hub: hubOption,
  },
  async run(values, _positionals, io) {
    const uses = Number(values.uses);
    if (!Number.isInteger(uses) || uses < 1) throw new LeafmeshError("CONFIG_INVALID", `--uses: '${values.uses}' is not a positive whole number`);
    const result = await createToken({ dir: values.dir, ttlMs: parseDuration(values.ttl!), uses, urls: splitList(values.url), site: values.site, tags: splitList(values.tags) });
    if (values.out) writeSecretFile(values.out, `${result.token}\n`);
    const summary = `token ${result.state.id}: ${result.state.uses} uses until ${result.state.expiresAt}${result.state.site ? `, site ${result.state.site}` : ""}${result.state.tags.length ? `, tags ${result.state.tags.join(",")}` : ""}`;
    if (values.out) io.stdout.write(`${summary}; written to ${values.out}\n`);
    else {
      io.stderr.write(`${summary}\n`);
      io.stdout.write(`${result.token}\n`);
    }
    if (result.changedAccounts.length > 0) await pushTo(values.dir, values.hub, result.changedAccounts, values.out ? io : { ...io, stdout: io.stderr });
    return 0;
  },
});

const tokensCommand = defineCommand({
  name: "keys tokens",
  summary: "list the join tokens with their status (active, expired, used up, revoked), uses and the nodes that joined with them",
  options: { dir: dirOption, json: { type: "boolean", description: "print JSON instead of a table" } },
  async run(values, _positionals, io) {
    const tokens = listTokens(readKeyState(values.dir).tokens, Date.now());
    if (values.json) {
      io.stdout.write(`${JSON.stringify(tokens, null, 2)}\n`);
      return 0;
    }
    const rows = [
      ["TOKEN", "STATUS", "USES", "EXPIRES", "SITE", "TAGS", "NODES"],
      ...tokens.map((token) => [token.id, token.status, `${token.used}/${token.uses}`, token.expiresAt, token.site ?? "-", token.tags.join(",") || "-", token.nodes.join(",") || "-"]),
    ];
    const widths = rows[0].map((_cell, column) => Math.max(...rows.map((row) => row[column].length)));
    for (const row of rows) io.stdout.write(`${row.map((cell, column) => cell.padEnd(widths[column])).join("  ").trimEnd()}\n`);
    return 0;
  },
});

export const keysSubcommands: Command[] = [initCommand, issueCommand, listCommand, revokeCommand, issueSiteCommand, resignCommand, hubCertCommand, pushCommand, tokenCommand, tokensCommand, k8sSecretCommand];

function keysHelp(): string {
  return [
    "leafmesh keys — the mesh's keys: NATS operator and accounts, TLS CA, pre-shared key, per-node credentials",
    "",
    "Usage: leafmesh keys <command> [options]",
    "",
    "Commands:",
    ...keysSubcommands.map((command) => `  ${command.name.slice("keys ".length).padEnd(11)}${command.summary}`),
    "",
    "Run 'leafmesh keys <command> --help' for a command's options.",
    "",
  ].join("\n");
}

export async function runKeysCommand(argv: string[], out: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    (name === undefined ? out.stderr : out.stdout).write(keysHelp());
    return name === undefined ? 2 : 0;
  }
  const command = keysSubcommands.find((candidate) => candidate.name === `keys ${name}`);
  if (!command) {
    out.stderr.write(`leafmesh keys: unknown command '${name}'\n${keysHelp()}`);
    return 2;
  }
  return command.main(rest, { stdout: out.stdout, stderr: out.stderr, env, signal: new AbortController().signal });
}

export const keysCommand: Command = {
  name: "keys",
  summary: commandSummaries.keys,
  help: () => "Usage: leafmesh keys <init|issue|list|revoke|issue-site|resign|hub-cert|push|token|tokens|k8s-secret> [options]\nRun 'leafmesh keys --help' for the commands.\n",
  optionTable: () => [],
  main: (argv, io) => runKeysCommand(argv, io, io.env),
};
