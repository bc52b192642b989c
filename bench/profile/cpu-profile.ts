/**
 * Reads a V8 CPU profile (`node --cpu-prof`) and writes what a person reads:
 * a text summary (functions by self time and by total time, and by source file)
 * and a flame graph as SVG (stacks merged from the root, width = time).
 *
 *   node bench/profile/cpu-profile.ts PROFILE.cpuprofile [OUT-PREFIX]
 * writes OUT-PREFIX.txt and OUT-PREFIX.svg (default: next to the profile).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { basename, relative, resolve } from "node:path";
import type { ProfileWindow } from "./in-process.ts";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
  hitCount?: number;
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const root = resolve(import.meta.dirname, "../..");

function frameName(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url ? (url.startsWith("file://") ? relative(root, url.slice(7)) : url) : "";
  return `${functionName || "(anonymous)"}${file ? ` ${file}:${lineNumber + 1}` : ""}`;
}

function fileOf(node: ProfileNode): string {
  const url = node.callFrame.url;
  if (!url) return node.callFrame.functionName || "(native)";
  const file = url.startsWith("file://") ? relative(root, url.slice(7)) : url;
  // Packages by name, leafmesh by file.
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file);
  return match ? `npm:${match[1]}` : file;
}

export interface CpuSummary {
  totalMs: number;
  text: string;
  svg: string;
}

/**
 * Self and total milliseconds per node, from the samples and their time deltas.
 * `window` (a profile taken in-process, bench/profile/in-process.ts): the CPU the
 * kernel counted, so the summary can say how much of "(idle)" was native work
 * and give each item's share of the main thread's CPU.
 */
export function summarizeCpuProfile(profile: Profile, title: string, window?: ProfileWindow): CpuSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const selfMs = new Map<number, number>();
  for (let index = 0; index < profile.samples.length; index++) {
    const id = profile.samples[index];
    const delta = (profile.timeDeltas[index + 1] ?? profile.timeDeltas[index] ?? 0) / 1000;
    selfMs.set(id, (selfMs.get(id) ?? 0) + delta);
  }
  const totalMs = [...selfMs.values()].reduce((sum, value) => sum + value, 0);
  const idleNames = new Set(["(idle)", "(program)", "(garbage collector)"]);

  const selfByName = new Map<string, number>();
  const selfByFile = new Map<string, number>();
  const totalByName = new Map<string, number>();
  for (const [id, ms] of selfMs) {
    const node = byId.get(id)!;
    selfByName.set(frameName(node), (selfByName.get(frameName(node)) ?? 0) + ms);
    selfByFile.set(fileOf(node), (selfByFile.get(fileOf(node)) ?? 0) + ms);
    // Total: once per distinct frame name on the stack (recursion counted once).
    const seen = new Set<string>();
    for (let current: number | undefined = id; current !== undefined; current = parent.get(current)) {
      const name = frameName(byId.get(current)!);
      if (seen.has(name)) continue;
      seen.add(name);
      totalByName.set(name, (totalByName.get(name) ?? 0) + ms);
    }
  }
  const idle = [...selfByName].filter(([name]) => idleNames.has(name.split(" ")[0])).reduce((sum, [, ms]) => sum + ms, 0);
  const sampledIdle = selfByName.get("(idle)") ?? 0;
  const share = (ms: number, of: number) => `${((100 * ms) / of).toFixed(1).padStart(5)}%`;
  const top = (map: Map<string, number>, count: number) =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, count)
      .map(([name, ms]) => `${ms.toFixed(1).padStart(9)} ms ${share(ms, totalMs)} ${name.startsWith("(idle)") ? "      " : share(ms, totalMs - sampledIdle)}  ${name}`);
  const windowLines = window
    ? [
        `main thread CPU over the window ${window.mainThreadCpuMs.toFixed(0)} ms of ${window.wallMs.toFixed(0)} ms wall (the whole process, all threads: ${window.processCpuMs.toFixed(0)} ms)`,
        window.mainThreadCpuMs >= totalMs - sampledIdle
          ? `sampled outside "(idle)": ${(totalMs - sampledIdle).toFixed(0)} ms; the other ~${(window.mainThreadCpuMs - (totalMs - sampledIdle)).toFixed(0)} ms of CPU is native work V8 counts as "(idle)": libuv's poll phase outside JavaScript (socket reads, TLS decrypting what was read, epoll)`
          : // V8 samples on a wall clock: a thread that waits for a core (or for GC helper threads) counts where it stands.
            `sampled outside "(idle)": ${(totalMs - sampledIdle).toFixed(0)} ms, more than the thread's CPU: V8 samples wall time, so time the thread waited for a core or for GC's helper threads counts too; read shares as shares of busy wall time`,
      ]
    : [];
  const text = [
    `# ${title}`,
    `sampled ${totalMs.toFixed(0)} ms, of which idle/program/GC ${idle.toFixed(0)} ms (GC alone ${(selfByName.get("(garbage collector)") ?? 0).toFixed(0)} ms)`,
    ...windowLines,
    'columns: ms, share of the whole window, share of the busy samples (all but "(idle)")',
    "",
    "## self time by source file or package",
    ...top(selfByFile, 30),
    "",
    "## self time by function",
    ...top(selfByName, 40),
    "",
    "## total time by function (inclusive)",
    ...top(totalByName, 60),
    "",
  ].join("\n");
  return { totalMs, text, svg: flameGraph(profile, byId, selfMs, title) };
}

interface Frame {
  name: string;
  ms: number;
  children: Map<string, Frame>;
}

function flameGraph(profile: Profile, byId: Map<number, ProfileNode>, selfMs: Map<number, number>, title: string): string {
  // Merge the tree by frame name (the profile splits one function into many nodes by call site).
  const rootFrame: Frame = { name: "all", ms: 0, children: new Map() };
  const walk = (id: number, into: Frame): number => {
    const node = byId.get(id)!;
    const name = frameName(node);
    if (name.startsWith("(idle)")) return 0;
    let frame = into.children.get(name);
    if (!frame) into.children.set(name, (frame = { name, ms: 0, children: new Map() }));
    let ms = selfMs.get(id) ?? 0;
    for (const child of node.children ?? []) ms += walk(child, frame);
    frame.ms += ms;
    return ms;
  };
  const rootNode = profile.nodes[0];
  for (const child of rootNode.children ?? []) rootFrame.ms += walk(child, rootFrame);
  const width = 1600;
  const rowHeight = 16;
  const rects: string[] = [];
  let depthMax = 0;
  const draw = (frame: Frame, x: number, depth: number) => {
    const w = (frame.ms / rootFrame.ms) * width;
    if (w < 0.3) return;
    depthMax = Math.max(depthMax, depth);
    const hue = frame.name.includes("node_modules") ? 30 : frame.name.includes(".ts:") ? 200 : 0;
    const label = w > 40 ? escapeXml(frame.name).slice(0, Math.floor(w / 6.5)) : "";
    rects.push(
      `<g><title>${escapeXml(frame.name)} ${frame.ms.toFixed(1)} ms (${((100 * frame.ms) / rootFrame.ms).toFixed(1)}%)</title><rect x="${x.toFixed(1)}" y="${depth}" width="${w.toFixed(1)}" height="${rowHeight - 1}" fill="hsl(${hue},70%,${60 + ((frame.name.length * 7) % 25)}%)"/>${label ? `<text x="${(x + 3).toFixed(1)}" y="${depth + 12}">${label}</text>` : ""}</g>`,
    );
    let childX = x;
    for (const child of [...frame.children.values()].sort((a, b) => b.ms - a.ms)) {
      draw(child, childX, depth + rowHeight);
      childX += (child.ms / rootFrame.ms) * width;
    }
  };
  draw(rootFrame, 0, 24);
  const height = depthMax + rowHeight + 30;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="monospace" font-size="11"><text x="4" y="16" font-size="13">${escapeXml(title)} — ${rootFrame.ms.toFixed(0)} ms on CPU (hover for names)</text>${rects.join("")}</svg>\n`;
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (char) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[char]!);
}

/** Summarizes one .cpuprofile file into OUT-PREFIX.txt and .svg; returns the text. */
export function writeCpuSummary(file: string, outPrefix = file.replace(/\.cpuprofile$/, ""), window?: ProfileWindow): string {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const summary = summarizeCpuProfile(profile, basename(file), window);
  writeFileSync(`${outPrefix}.txt`, summary.text);
  writeFileSync(`${outPrefix}.svg`, summary.svg);
  return summary.text;
}

if (import.meta.main) {
  const [file, out] = process.argv.slice(2);
  if (!file) {
    console.error("usage: node bench/profile/cpu-profile.ts PROFILE.cpuprofile [OUT-PREFIX]");
    process.exit(2);
  }
  console.log(writeCpuSummary(file, out));
}
