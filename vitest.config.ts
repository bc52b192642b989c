import { defineConfig } from "vitest/config";
import { BaseSequencer, type TestSpecification } from "vitest/node";
import { compileCacheFor } from "./bin/compile-cache.js";
import { reportWorkerDeaths } from "./test/support/worker-deaths.ts";

// A worker that dies names its file, and the run ends with its summary (test/support/worker-deaths.ts).
reportWorkerDeaths();

// Each worker (a suite fork, reused from file to file; a timed thread, fresh per file) imports nats.js, libp2p and the
// rest natively: with V8's code cache (leafmesh's own, bin/compile-cache.js) they are not compiled again in every one. Measured on 31 files, three
// runs each: 40.7–41.3 s of user CPU without, 35.0–40.7 with. The processes the tests start inherit it, as
// `leafmesh` would pick the same directory itself; test/compile-cache.test.ts takes it out where it tests the choice.
const compileCache = compileCacheFor(process.env);
if (typeof compileCache === "string") process.env.NODE_COMPILE_CACHE = compileCache;

/**
 * The heaviest tests: whole meshes with JetStream clusters (hub clusters, site
 * clusters, regions) in network namespaces. On a loaded 2-core machine two of them
 * at once starve each other's nats-servers (JetStream meta elections, mirrors), so
 * they run one at a time, after the rest of the suite. Namespace tests with one hub
 * and a few agents (the NAT lab, why, drill, one connection) run in the suite.
 */
const lab = ["test/lab-mesh.test.ts", "test/sites-lab.test.ts", "test/regions-lab.test.ts", "test/site-locality.test.ts"];

/**
 * Long files that mostly wait (for heartbeats to be missed, a drill's cut to pass, a node to
 * be partitioned, a remade stream's 30 s grace, UDP flows to expire, a frozen agent's liveness
 * bound, a certificate's life, a shaped uplink), and files whose checks hold only if their
 * processes get a core when they ask (2,000 downloads' memory bound, a few hundred churn cycles'
 * every datagram answered, the demo's hole punching within its curl's 10 s). They run five at a
 * time in worker threads beside the lab files, after the suite (another pool: vitest runs a
 * group's pools at once, a pool's single-fork files only after its others), where the lab's
 * meshes, which mostly wait, leave a core idle (in 2026-12-08's runs, mostly in the phase's first ~40 s). Longest first.
 *
 * Tried on 2026-12-07 and not kept: the lab and these files in threads beside the suite from
 * the start, at nice −10 (a thread's nice value is its children's): 929–970 s against ~1,045 s,
 * but the suite, which keeps both cores busy, then starved in its turn (relay-kill's agents not
 * ready within 30 s, node-directory's records, capacity, churn, the demo: failures in three of
 * four full runs). docs/performance.md, seventeenth session.
 */
const timed = [
  "trust/renewal.test.ts", "trust/site-renewal.test.ts", "test/offline-lan.test.ts", "test/hub-store-lost.test.ts", "services/tunnel/frozen-agent.test.ts",
  "test/peer-faults.test.ts", "test/churn.test.ts", "test/pmtu-blackhole-lab.test.ts", "test/partition.test.ts", "test/drill-lab.test.ts", "test/capacity.test.ts",
  "trust/token-restored.test.ts", "test/ipv6-punch-lab.test.ts", "services/tunnel/direct-blackhole.test.ts", "test/slow-uplink-lab.test.ts", "test/demo-lab.test.ts",
];

/**
 * The longest files (20 s to 100 s each in a full run), longest first. A clean
 * clone (CI) has no vitest timing cache, and vitest then starts files by size: a short file of
 * long waits (offline-lan, punched-tls) could start last and leave one worker idle for its whole
 * run at the end. These start first; every other file follows in vitest's own order.
 */
const slowFirst = [
  // the timed lanes' (their pool starts them in this order)
  ...timed,
  // the suite's, by their time in a full run (2026-12-06; the four added on 2026-12-07 by theirs in its first full run)
  // (the NAT routers' and the NAT lab's punches are timed: two files apart, they do not start together. Side by side,
  // 2026-12-08, a pair of the routers' matrix settled on another path than its table names.)
  "trust/hub-store-restored.test.ts", "trust/enrolment.test.ts", "test/why-lab.test.ts", "services/tunnel/carriers.test.ts", "services/tunnel/nat-routers.test.ts",
  "test/relay-kill.test.ts", "trust/hub-hosts.test.ts", "services/tunnel/nat-lab.test.ts", "test/one-connection-lab.test.ts", "test/fabric.test.ts", "services/traffic/lab.test.ts",
  "test/gateway-lab.test.ts", "trust/revocations-remade.test.ts", "trust/attacks.test.ts", "trust/tunnel-revocation.test.ts",
  "trust/flat-keys.test.ts", "test/cli.test.ts", "trust/join-retry.test.ts", "test/node-restart.test.ts", "test/sites.test.ts",
  // 2026-12-07: 30–36 s alone on a quiet machine (not yet timed in a full run)
  "services/traffic/ipv6-lab.test.ts",
  // 2026-12-07 (thirteenth session): 38 s alone, mostly waiting for a path to notice a changed address
  "test/renumber-lab.test.ts",
];

class SlowFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (file: TestSpecification) => {
      const index = slowFirst.findIndex((path) => file.moduleId.endsWith(`/${path}`));
      return index === -1 ? slowFirst.length : index;
    };
    // Array.prototype.sort is stable: files off the list keep vitest's order.
    return sorted.sort((a, b) => rank(a) - rank(b));
  }
}

// Tests start real nats-server processes and network namespaces: give them time. Three forks for
// the suite: two left a 2-core machine idle a fifth of the time; four gave 1,067 s against 1,083
// with 5 % more CPU, and, beside the timed lanes, starved the NAT lab, the NAT routers and the
// enrolment fleet into failing (2026-12-07).
export default defineConfig({
  test: {
    exclude: ["node_modules/**", "bench/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // LEAFMESH_TEST_CPU_LOG=FILE: each file's CPU, its worker's and its children's (test/support/worker-file.ts). The
    // suite is CPU-bound on 2 cores: its length is its CPU over two (docs/performance.md, sixteenth session).
    setupFiles: ["test/support/worker-file.ts"],
    maxWorkers: 3,
    minWorkers: 1,
    // The timed files' five lanes run in threads, beside the lab's one fork.
    // The forks are not started again for every file (isolate: false): a fork costs ~0.75 s of CPU on the slower VMs
    // CI runs on (node's start, vitest's runtime, nats.js and libp2p loaded again), and 295 files paid it (measured,
    // 2026-12-07: 187 files of under 3 s each, 263 s of CPU → 111 s; the full run 1,103 s → 1,045 s). A file's modules
    // stay loaded for the next file in its fork: tests share no state through them (each file starts and stops its
    // own processes, test/support/processes.ts). minForks = maxForks: tinypool 1.1 sets an idle fork's idle timer
    // twice when there are more forks than the minimum, both fire, and the second stop of the fork rejects unhandled
    // ("Terminating worker thread"), which ended vitest without its summary and left the other forks running.
    poolOptions: { threads: { maxThreads: 5, minThreads: 1 }, forks: { isolate: false, minForks: 3, maxForks: 3 } },
    reporters: ["default"],
    sequence: { sequencer: SlowFirstSequencer },
    projects: [
      { extends: true, test: { name: "suite", include: ["**/*.test.ts"], exclude: ["node_modules/**", "bench/**", ...lab, ...timed], sequence: { groupOrder: 0 } } },
      { extends: true, test: { name: "lab", include: lab, pool: "forks", poolOptions: { forks: { singleFork: true } }, sequence: { groupOrder: 1 } } },
      { extends: true, test: { name: "timed", include: timed, pool: "threads", sequence: { groupOrder: 1 } } },
    ],
  },
});
