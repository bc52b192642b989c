/**
 * A state.json that is JSON but not whole mesh state (hand-edited, written by another tool, a stray `{}`): every
 * `keys` command refuses it naming the file and the field, and nothing is written. Before, most ended with a
 * TypeError and a stack, and `{"nodes":{}}` was taken as a mesh without nodes: `keys issue` signed a new node
 * into it and every node and revocation the directory knew was gone from state.json for good.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Writable } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { runKeysCommand } from "../cli/keys.ts";

let base: string;
let keys: string;
beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), "leafmesh-key-state-"));
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  await issueNode({ dir: keys, node: "edge-a" });
});
afterAll(() => {
  if (base) rmSync(base, { recursive: true, force: true });
});

async function keysCommand(args: string[]): Promise<{ code: number; output: string }> {
  let output = "";
  const sink = new Writable({ write(chunk, _encoding, done) { output += chunk.toString(); done(); } });
  return { code: await runKeysCommand(args, { stdout: sink, stderr: sink }, {}), output };
}

describe("a state.json of the wrong shape", () => {
  const shapes: [string, string][] = [
    ["null", "the whole file"],
    ["{}", "operator"],
    ['{"nodes":{}}', "operator"],
  ];
  for (const [text, field] of shapes) {
    it(`${text}: list, issue and revoke refuse it naming the file and '${field}', and write nothing`, async () => {
      const good = readFileSync(join(keys, "state.json"), "utf8");
      writeFileSync(join(keys, "state.json"), text, { mode: 0o600 });
      try {
        for (const args of [["list"], ["issue", "--node", "edge-z"], ["revoke", "--node", "edge-a"]]) {
          const result = await keysCommand([...args, "--dir", keys]);
          expect(result.code, result.output).toBe(1);
          expect(result.output).toContain(`${join(keys, "state.json")} is not whole mesh state (${field}`);
          expect(result.output).not.toContain("unexpected error");
        }
        expect(readFileSync(join(keys, "state.json"), "utf8")).toBe(text);
      } finally {
        writeFileSync(join(keys, "state.json"), good, { mode: 0o600 });
      }
    });
  }

  it("a node entry without its revocations: named by its path", async () => {
    const good = readFileSync(join(keys, "state.json"), "utf8");
    const state = JSON.parse(good) as { nodes: Record<string, { revocations?: unknown }> };
    delete state.nodes["edge-a"].revocations;
    writeFileSync(join(keys, "state.json"), JSON.stringify(state), { mode: 0o600 });
    try {
      const result = await keysCommand(["list", "--dir", keys]);
      expect(result.code, result.output).toBe(1);
      expect(result.output).toContain("(nodes.edge-a.revocations:");
    } finally {
      writeFileSync(join(keys, "state.json"), good, { mode: 0o600 });
    }
  });
});
