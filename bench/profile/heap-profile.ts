/**
 * Reads sampling heap profiles (bench/profile/heap-sampling-preload.ts, or
 * `--heap-prof`) and says who allocated: bytes by stage (the nearest leafmesh
 * file on the allocating stack, grouped by what it does for a fresh agent), by
 * allocating function with its nearest leafmesh caller, and by leafmesh
 * function. Several files are summed and the bytes divided by their count: the
 * mean of several starts. `--per N` also divides by N (the objects loaded).
 *
 *   node bench/profile/heap-profile.ts [--per 20000] FILE.heapprofile…
 */
import { readFileSync } from "node:fs";
import { relative, resolve } from "node:path";

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

const root = resolve(import.meta.dirname, "../..");

function fileOf(url: string): string {
  if (!url) return "";
  let file = url.startsWith("file://") ? relative(root, url.slice(7)) : url;
  // A profile of another checkout (an A/B's other tree): its files by their place in that tree.
  const elsewhere = file.startsWith("../") && !file.includes("node_modules/") ? /\/((?:bus|services|balance|cli|roles|lib|nats|trust|bin|bench)\/.*)$/.exec(file) : null;
  if (elsewhere) file = elsewhere[1];
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file);
  return match ? `npm:${match[1]}` : file;
}

const isLeafmesh = (file: string) => file !== "" && !file.startsWith("npm:") && !file.startsWith("node:") && !file.startsWith("../") && /\.(ts|js)$/.test(file);
/** The bus's own files: what they allocate is charged to the actor that called them, when one is on the stack. */
const isBusPlumbing = (file: string) => file === "bus/bus.ts" || file === "bus/events.ts";

/** What a leafmesh file does while a fresh agent loads the catalog. */
export function stageOf(file: string): string {
  if (file === "") return "(no leafmesh frame)";
  if (/^bus\/(catalog|catalog-fits|kv-follow|catalog-feed|mirror-lineage)\.ts$/.test(file)) return "decode (KV watch, catalog objects)";
  if (file === "bus/catalog-index.ts") return "the catalog index";
  if (file.startsWith("services/controller/")) return "controller: KV entries, catalog events";
  if (file === "bus/bus.ts" || file === "bus/events.ts") return "the bus: events decoded for a subscriber (no actor on the stack)";
  if (file === "bus/actor-link.ts" || file === "bus/subjects.ts") return "the bus (actor links, subjects)";
  if (file.startsWith("services/dns/")) return "DNS zone";
  if (file.startsWith("services/traffic/") || file.startsWith("balance/")) return "traffic (plans, bindings, listeners, generations)";
  if (file.startsWith("services/proxier/")) return "proxier (reading generations)";
  if (file.startsWith("services/")) return file.split("/").slice(0, 2).join("/");
  return file.split("/")[0] ?? file;
}

interface Totals {
  all: number;
  byStage: Map<string, number>;
  byAllocator: Map<string, number>;
  byLeafmeshFunction: Map<string, number>;
}

const add = (map: Map<string, number>, key: string, bytes: number) => map.set(key, (map.get(key) ?? 0) + bytes);
const frameName = (frame: HeapNode["callFrame"]) => `${frame.functionName || "(anonymous)"} ${fileOf(frame.url)}:${frame.lineNumber + 1}`.trim();

function walk(node: HeapNode, nearest: HeapNode["callFrame"] | undefined, totals: Totals): void {
  const file = fileOf(node.callFrame.url);
  const leafmeshFrame = isLeafmesh(file) && !(isBusPlumbing(file) && nearest && !isBusPlumbing(fileOf(nearest.url))) ? node.callFrame : nearest;
  if (node.selfSize > 0) {
    totals.all += node.selfSize;
    add(totals.byStage, stageOf(leafmeshFrame ? fileOf(leafmeshFrame.url) : ""), node.selfSize);
    const caller = leafmeshFrame && leafmeshFrame !== node.callFrame ? ` ← ${frameName(leafmeshFrame)}` : "";
    add(totals.byAllocator, `${frameName(node.callFrame)}${caller}`, node.selfSize);
    if (leafmeshFrame) add(totals.byLeafmeshFunction, frameName(leafmeshFrame), node.selfSize);
  }
  for (const child of node.children) walk(child, leafmeshFrame, totals);
}

export function summarizeHeapProfiles(files: string[], perObjects = 1): string {
  const totals: Totals = { all: 0, byStage: new Map(), byAllocator: new Map(), byLeafmeshFunction: new Map() };
  for (const file of files) walk((JSON.parse(readFileSync(file, "utf8")) as { head: HeapNode }).head, undefined, totals);
  const scale = files.length * perObjects;
  const unit = perObjects > 1 ? "bytes per object" : "KiB";
  const show = (bytes: number) => (perObjects > 1 ? (bytes / scale).toFixed(0) : (bytes / scale / 1024).toFixed(0)).padStart(9);
  const table = (title: string, map: Map<string, number>, rows: number) =>
    [`\n${title} (${unit}, share of all):`, ...[...map].sort((a, b) => b[1] - a[1]).slice(0, rows).map(([name, bytes]) => `${show(bytes)} ${((100 * bytes) / totals.all).toFixed(1).padStart(5)} %  ${name}`)];
  return [
    `${files.length} profile(s): ${(totals.all / files.length / 2 ** 20).toFixed(1)} MiB allocated each${perObjects > 1 ? `, ${(totals.all / scale).toFixed(0)} bytes per object of ${perObjects}` : ""}`,
    ...table("by stage (the nearest leafmesh file on the stack)", totals.byStage, 30),
    ...table("by leafmesh function (the nearest on the stack)", totals.byLeafmeshFunction, 40),
    ...table("by allocating function ← its nearest leafmesh caller", totals.byAllocator, 50),
  ].join("\n");
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const perAt = args.indexOf("--per");
  const per = perAt >= 0 ? Number(args.splice(perAt, 2)[1]) : 1;
  if (args.length === 0) throw new Error("usage: node bench/profile/heap-profile.ts [--per N] FILE.heapprofile…");
  console.log(summarizeHeapProfiles(args, per));
}
