/**
 * The code held to docs/architecture.md: every import that crosses parts runs
 * along an arrow of its picture; product code never imports the lab or test
 * support; an actor never imports another actor; a product file over 400 lines
 * says why at its top; no product file imports zod (lib/schema instead).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const root = resolve(import.meta.dirname, "..");
const files = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "*.ts"], { cwd: root, encoding: "utf8" })
  .trim()
  .split("\n")
  .filter(Boolean);

/** The part a file belongs to: `services/<actor>` for actors, else its top folder. */
function partOf(file: string): string {
  const [top, second] = file.split("/");
  if (top === "services") return `services/${second}`;
  return file.includes("/") ? top : "(top)";
}

const outsideThePicture = new Set(["test", "lab", "bench", "(top)"]);
const isProduct = (file: string) => !file.endsWith(".test.ts") && !outsideThePicture.has(partOf(file));

/** Relative imports of a file, static and dynamic, as repository paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(resolve(root, file), "utf8");
  return [...text.matchAll(/(?:^|\s)(?:import|export)\b[^"'`]*?\bfrom\s*["'](\.{1,2}\/[^"']+)["']|\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/gm)].map((match) =>
    relative(root, resolve(root, dirname(file), match[1] ?? match[2])),
  );
}

/** The arrows of the picture in docs/architecture.md. */
function arrows(): Set<string> {
  const doc = readFileSync(resolve(root, "docs/architecture.md"), "utf8");
  const picture = /```mermaid\n([\s\S]*?)```/.exec(doc)?.[1] ?? "";
  return new Set([...picture.matchAll(/^\s*(\S+)\s+-->\s+(\S+)\s*$/gm)].map((match) => `${match[1]} -> ${match[2]}`));
}

/** Product files allowed into the lab, and why (docs/architecture.md says the same). */
const labDoors = new Map([["cli/demo.ts -> lab/demo-lab.ts", "leafmesh demo --lab runs the mesh in network namespaces"]]);

describe("the code keeps to docs/architecture.md", () => {
  const productImports = files.filter(isProduct).flatMap((file) => importsOf(file).map((target) => ({ file, target, from: partOf(file), to: partOf(target) })));

  it("reads a picture and imports to check (the test would pass on nothing otherwise)", () => {
    expect(arrows().size).toBeGreaterThan(20);
    expect(productImports.length).toBeGreaterThan(300);
  });

  it("imports across parts only along the picture's arrows", () => {
    const drawn = arrows();
    const undrawn = productImports
      .filter(({ from, to }) => from !== to && !outsideThePicture.has(to))
      .filter(({ from, to }) => !drawn.has(`${from} -> ${to}`))
      .map(({ file, target }) => `${file} -> ${target}`);
    expect(undrawn).toEqual([]);
  });

  it("has no product file that imports the lab or test support (but the demo's namespace mode)", () => {
    const leaks = productImports
      .filter(({ to }) => to === "lab" || to === "test" || to === "bench")
      .map(({ file, target }) => `${file} -> ${target}`)
      .filter((edge) => !labDoors.has(edge));
    expect(leaks).toEqual([]);
  });

  it("has no actor that imports another actor", () => {
    const crossings = productImports.filter(({ from, to }) => from.startsWith("services/") && to.startsWith("services/") && from !== to).map(({ file, target }) => `${file} -> ${target}`);
    expect(crossings).toEqual([]);
  });

  it("has no product file over 400 lines without a reason at its top", () => {
    const long = files
      .filter(isProduct)
      .map((file) => ({ file, text: readFileSync(resolve(root, file), "utf8") }))
      .filter(({ text }) => text.split("\n").length > 400)
      .filter(({ text }) => !/^\s*\*\s*Why this file is long:/m.test(text.split("*/")[0]))
      .map(({ file, text }) => `${file} (${text.split("\n").length} lines)`);
    expect(long).toEqual([]);
  });

  it("measures durations, deadlines and ages on a monotonic clock: no wall-clock reading in arithmetic or a comparison", () => {
    // NTP sets an edge box's wall clock by minutes or hours, at any moment: a keep-alive due at a wall time was held
    // for the hour a clock was set back, and the node's record expired everywhere (services/tunnel/node-directory.ts).
    // Durations take performance.now() or a Clock's monotonic(); a line that compares with the wall clock on purpose
    // (an expiry written as a date) says "wall clock" in a comment, on it or the line above.
    const wallArithmetic = /(?:\bDate|\bclock|#clock)\.now\(\)\s*[-+<>]|(?:[-+<]|(?<!=)>)=?\s*[\w#.]*?(?:\bDate|\bclock|#clock)\.now\(\)/;
    const offending = files
      .filter(isProduct)
      .flatMap((file) =>
        readFileSync(resolve(root, file), "utf8")
          .split("\n")
          .map((line, index, lines) => ({ where: `${file}:${index + 1}`, line, above: lines[index - 1] ?? "" }))
          .filter(({ line, above }) => wallArithmetic.test(line) && !/wall clock|mtimeMs/i.test(line) && !/wall clock/i.test(above)),
      )
      .map(({ where, line }) => `${where}: ${line.trim()}`);
    expect(offending).toEqual([]);
  });

  it("has no product file that imports zod: lib/schema holds what the project uses of it (zod 4 cost an agent ~6 MiB and ~60 ms of start)", () => {
    const importers = files.filter(isProduct).filter((file) => /\bfrom\s*["']zod(?:\/[^"']*)?["']|\b(?:import|require)\(\s*["']zod(?:\/[^"']*)?["']\s*\)/.test(readFileSync(resolve(root, file), "utf8")));
    expect(importers).toEqual([]);
  });

  it("has no product file that loads undici: no fetch, no value import of node:http (lib/node-http.ts, nats/monitor-http.ts say why)", () => {
    const code = (file: string) => readFileSync(resolve(root, file), "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
    const callers = files.filter(isProduct).filter((file) => /(?<![\w.])fetch\(/.test(code(file)));
    expect(callers).toEqual([]);
    const importers = files.filter(isProduct).filter((file) => /^\s*import\s+(?!type\b)[^;]*?from\s+["'](node:)?http["']/m.test(code(file)));
    expect(importers).toEqual([]);
  });
});
