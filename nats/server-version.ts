/**
 * Which nats-server the mesh runs on. The code relies on behaviour measured on 2.9.10
 * (docs/nats-facts.md): direct gets of KV streams (`$JS.API.DIRECT.GET`, which node accounts import),
 * mirrors across JetStream domains with an external deliver prefix, the full resolver taking
 * `$SYS.REQ.CLAIMS.UPDATE`. A release older than 2.9.0 lacks direct gets, and a node's catalog reads
 * would only time out; so a server below the minimum is refused at start, with the binary, its version
 * and the minimum. A release newer than the tested series may behave otherwise where the mesh depends on
 * it (permissions on leaf connections, account re-signing): it runs, with one warning per binary.
 *
 * ```ts
 * const version = await readServerVersion("/usr/sbin/nats-server");   // { text: "nats-server: v2.9.10", version: [2, 9, 10] }
 * checkServerVersion("/usr/sbin/nats-server", version, log);          // throws NATS_SERVER_VERSION below the minimum
 * ```
 */
import { LeafmeshError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { runServerBinary } from "./server-binary.ts";

export type Version = readonly [number, number, number];

/** @default 2.9.0 — direct gets (`$JS.API.DIRECT.GET`, the catalog and node-record reads node accounts import) came with 2.9.0. */
export const minimumServerVersion: Version = [2, 9, 0];
/** The series every test and measurement ran on (Debian's 2.9.10): a newer minor or major is warned about once. */
export const testedServerSeries: readonly [number, number] = [2, 9];

export function formatVersion(version: Version): string {
  return version.join(".");
}

/** The version in `nats-server --version`'s output ("nats-server: v2.9.10"), or undefined when it names none. */
export function parseServerVersion(text: string): Version | undefined {
  // "v" required: a wrapper may print other lines first, and an address (127.0.0.1) is no version.
  const match = /\bv(\d+)\.(\d+)\.(\d+)/.exec(text);
  return match ? [Number(match[1]), Number(match[2]), Number(match[3])] : undefined;
}

function compare(a: Version, b: Version): number {
  for (let index = 0; index < 3; index++) if (a[index] !== b[index]) return a[index] - b[index];
  return 0;
}

/**
 * Runs `binary --version` off the event loop. `missing` when the binary cannot be run at all
 * (the caller says so with how to install it); otherwise its output and the version in it.
 * `signal` (a Ctrl-C while the role starts) kills a run that hangs: `stopped` then.
 */
export async function readServerVersion(binary: string, signal?: AbortSignal): Promise<{ missing?: string; stopped?: boolean; text: string; version?: Version }> {
  const run = await runServerBinary(binary, ["--version"], signal);
  if (run.missing) return { missing: run.missing, text: "" };
  return { stopped: run.stopped, text: run.output, version: run.status === 0 ? parseServerVersion(run.output) : undefined };
}

/** Binaries already warned about as newer than tested, in this process: a restart in place or a second server says nothing again. */
const warnedNewer = new Set<string>();

/**
 * Refuses a version below minimumServerVersion (or an output that names none) with NATS_SERVER_VERSION;
 * warns once per binary for one newer than the tested series. Returns the version.
 */
export function checkServerVersion(binary: string, read: { text: string; version?: Version }, log: Logger): Version {
  const minimum = formatVersion(minimumServerVersion);
  if (!read.version) {
    throw new LeafmeshError(
      "NATS_SERVER_VERSION",
      `cannot tell which nats-server '${binary}' is: '${binary} --version' printed ${JSON.stringify(read.text.slice(0, 200))}, with no version in it. leafmesh needs nats-server ${minimum} or newer (tested with ${testedServerSeries.join(".")}.x); install it (Debian: apt-get install -y nats-server) or set LEAFMESH_NATS_SERVER to its path`,
    );
  }
  if (compare(read.version, minimumServerVersion) < 0) {
    throw new LeafmeshError(
      "NATS_SERVER_VERSION",
      `nats-server '${binary}' is version ${formatVersion(read.version)}, older than ${minimum}, the oldest leafmesh runs on (it needs JetStream direct gets, new in 2.9.0; tested with ${testedServerSeries.join(".")}.x): install a newer nats-server (Debian bookworm's is 2.9.10) or set LEAFMESH_NATS_SERVER to one`,
    );
  }
  const [major, minor] = read.version;
  const newer = major > testedServerSeries[0] || (major === testedServerSeries[0] && minor > testedServerSeries[1]);
  if (newer && !warnedNewer.has(binary)) {
    warnedNewer.add(binary);
    log.warn(
      { binary, version: formatVersion(read.version), tested: `${testedServerSeries.join(".")}.x` },
      `nats-server '${binary}' is version ${formatVersion(read.version)}, newer than the ${testedServerSeries.join(".")}.x leafmesh was tested with: what the mesh relies on (docs/nats-facts.md) may have changed; run the tests against it before trusting it`,
    );
  }
  return read.version;
}
