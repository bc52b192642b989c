/**
 * Reads a V8 heap snapshot (`--heapsnapshot-signal`, `v8.writeHeapSnapshot`) and
 * writes a summary of where the bytes sit: self size and count per constructor
 * (objects), per node type (strings, arrays, code, closures…), largest first.
 *
 *   node --max-old-space-size=4096 bench/profile/heap-snapshot.ts FILE.heapsnapshot [OUT.txt]
 */
import { readFileSync, writeFileSync } from "node:fs";
import { basename } from "node:path";
import { agentOwners, retainedByOwner } from "./heap-owners.ts";

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] }; node_count: number };
  nodes: number[];
  strings: string[];
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(2).padStart(8)} MiB`;

export function summarizeHeapSnapshot(snapshot: Snapshot, title: string): string {
  const fields = snapshot.snapshot.meta.node_fields;
  const stride = fields.length;
  const typeField = fields.indexOf("type");
  const nameField = fields.indexOf("name");
  const sizeField = fields.indexOf("self_size");
  const typeNames = snapshot.snapshot.meta.node_types[0];
  const byType = new Map<string, { bytes: number; count: number }>();
  const byConstructor = new Map<string, { bytes: number; count: number }>();
  let total = 0;
  const add = (map: Map<string, { bytes: number; count: number }>, key: string, bytes: number) => {
    const entry = map.get(key) ?? { bytes: 0, count: 0 };
    entry.bytes += bytes;
    entry.count++;
    map.set(key, entry);
  };
  for (let offset = 0; offset < snapshot.nodes.length; offset += stride) {
    const type = typeNames[snapshot.nodes[offset + typeField]];
    const bytes = snapshot.nodes[offset + sizeField];
    total += bytes;
    add(byType, type, bytes);
    if (type === "object" || type === "closure" || type === "native") add(byConstructor, `${type}:${snapshot.strings[snapshot.nodes[offset + nameField]].slice(0, 80)}`, bytes);
    if (type === "array" || type === "hidden") add(byConstructor, `${type}:${snapshot.strings[snapshot.nodes[offset + nameField]].slice(0, 80)}`, bytes);
  }
  const rows = (map: Map<string, { bytes: number; count: number }>, count: number) =>
    [...map]
      .sort((a, b) => b[1].bytes - a[1].bytes)
      .slice(0, count)
      .map(([name, entry]) => `${mib(entry.bytes)} ${String(entry.count).padStart(9)}×  ${name}`);
  return [
    `# ${title}`,
    `${mib(total)} in ${snapshot.snapshot.node_count} heap objects (self sizes)`,
    "",
    "## by node type",
    ...rows(byType, 20),
    "",
    "## by constructor (objects, closures, native, arrays)",
    ...rows(byConstructor, 50),
    "",
  ].join("\n");
}

export function writeHeapSummary(file: string, out = file.replace(/\.heapsnapshot$/, ".txt")): string {
  const snapshot = JSON.parse(readFileSync(file, "utf8")) as Snapshot & Parameters<typeof retainedByOwner>[0];
  const owned = retainedByOwner(snapshot, agentOwners);
  const text = [
    summarizeHeapSnapshot(snapshot, basename(file)),
    "## retained by owner (bench/profile/heap-owners.ts; the agent's actors)",
    ...owned.owners.map((entry) => `${mib(entry.retainedBytes)} ${String(entry.roots).padStart(9)}×  ${entry.owner}`),
    "",
  ].join("\n");
  writeFileSync(out, text);
  return text;
}

if (import.meta.main) {
  const [file, out] = process.argv.slice(2);
  if (!file) {
    console.error("usage: node bench/profile/heap-snapshot.ts FILE.heapsnapshot [OUT.txt]");
    process.exit(2);
  }
  console.log(writeHeapSummary(file, out));
}
