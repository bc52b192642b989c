/** A vitest setup file: records the test file this worker runs (test/support/worker-deaths.ts). */
import { beforeAll } from "vitest";
import { recordWorkerFile } from "./worker-deaths.ts";

beforeAll((suite) => {
  recordWorkerFile(suite.file.filepath);
});
