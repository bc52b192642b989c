/**
 * The shape every benchmark returns, and how tables are written: markdown for
 * people, JSON for scripts, both under bench/results/.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

export interface BenchTable {
  title: string;
  columns: string[];
  rows: (string | number)[][];
  notes?: string[];
}

export const resultsDir = resolve(import.meta.dirname, "results");

export function toMarkdown(table: BenchTable): string {
  const cell = (value: string | number) => (typeof value === "number" ? formatNumber(value) : value);
  const lines = [
    `## ${table.title}`,
    "",
    `| ${table.columns.join(" | ")} |`,
    `| ${table.columns.map(() => "---").join(" | ")} |`,
    ...table.rows.map((row) => `| ${row.map(cell).join(" | ")} |`),
  ];
  if (table.notes?.length) lines.push("", ...table.notes.map((note) => `- ${note}`));
  return `${lines.join("\n")}\n`;
}

export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString("en-US");
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export function writeTables(name: string, tables: BenchTable[]): { markdown: string; json: string } {
  mkdirSync(resultsDir, { recursive: true });
  const markdown = join(resultsDir, `${name}.md`);
  const json = join(resultsDir, `${name}.json`);
  writeFileSync(markdown, `# leafmesh benchmarks: ${name}\n\nRun ${new Date().toISOString()} on ${process.platform}/${process.arch}, Node ${process.version}.\n\n${tables.map(toMarkdown).join("\n")}`);
  writeFileSync(json, `${JSON.stringify({ at: new Date().toISOString(), tables }, null, 2)}\n`);
  return { markdown, json };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export const ratio = (leafmesh: number, baseline: number) => (baseline > 0 ? `${(leafmesh / baseline).toFixed(2)}×` : "n/a");
