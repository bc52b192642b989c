import { defineConfig } from "vitest/config";

/**
 * The heaviest tests: whole meshes (hubs, site clusters, agents) in network
 * namespaces. On a loaded 2-core machine two of them at once starve each other's
 * nats-servers (JetStream meta elections, mirrors), so they run one at a time,
 * after the rest of the suite.
 */
const lab = [
  "test/lab-mesh.test.ts",
  "test/sites-lab.test.ts",
  "test/regions-lab.test.ts",
  "test/site-locality.test.ts",
  "test/demo-lab.test.ts",
  "test/why-lab.test.ts",
  "test/drill-lab.test.ts",
  "test/one-connection-lab.test.ts",
];

// Tests start real nats-server processes and network namespaces: give them time,
// and run files one or two at a time so 2-core CI machines are not oversubscribed.
export default defineConfig({
  test: {
    exclude: ["node_modules/**", "bench/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    maxWorkers: 2,
    minWorkers: 1,
    reporters: ["default"],
    projects: [
      { extends: true, test: { name: "suite", include: ["**/*.test.ts"], exclude: ["node_modules/**", "bench/**", ...lab], sequence: { groupOrder: 0 } } },
      { extends: true, test: { name: "lab", include: lab, pool: "forks", poolOptions: { forks: { singleFork: true } }, sequence: { groupOrder: 1 } } },
    ],
  },
});
