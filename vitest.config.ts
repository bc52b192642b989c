import { defineConfig } from "vitest/config";

// Tests start real nats-server processes and network namespaces: give them time,
// and run files one or two at a time so 2-core CI machines are not oversubscribed.
export default defineConfig({
  test: {
    include: ["**/*.test.ts"],
    exclude: ["node_modules/**", "bench/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: true,
    maxWorkers: 2,
    minWorkers: 1,
    reporters: ["default"],
  },
});
