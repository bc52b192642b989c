/**
 * `npm run bench`: every benchmark of the project in one run, each beside its
 * baseline, gathered into bench/results/all.md and all.json. Benchmarks are not
 * tests: nothing here passes or fails on speed.
 *
 * `npm run bench -- fabric dns` runs only those.
 */
import { readFileSync } from "node:fs";
import { writeTables, type BenchTable } from "./table.ts";

const benches: Record<string, { module: string; exportName: string }> = {
  fabric: { module: "./fabric/run.ts", exportName: "runFabricBench" },
  dns: { module: "./dns/run.ts", exportName: "runDnsBench" },
  traffic: { module: "./traffic/run.ts", exportName: "runTrafficBench" },
  tunnel: { module: "./tunnel/run.ts", exportName: "runTunnelBench" },
  sites: { module: "./sites/run.ts", exportName: "runSitesBench" },
  capacity: { module: "./capacity/run.ts", exportName: "runCapacityBench" },
  gateway: { module: "./gateway/run.ts", exportName: "runGatewayBench" },
  scale: { module: "./scale/run.ts", exportName: "runScaleBench" },
};

const wanted = process.argv.slice(2).filter((arg) => !arg.startsWith("-"));
for (const name of wanted) {
  if (!benches[name]) {
    console.error(`unknown benchmark '${name}'; known: ${Object.keys(benches).join(", ")}`);
    process.exit(2);
  }
}
const tables: BenchTable[] = [];
let failed = 0;
for (const [name, bench] of Object.entries(benches)) {
  if (wanted.length > 0 && !wanted.includes(name)) continue;
  console.error(`== bench ${name}`);
  try {
    const module = (await import(bench.module)) as Record<string, () => Promise<BenchTable | BenchTable[]>>;
    const result = await module[bench.exportName]();
    tables.push(...(Array.isArray(result) ? result : [result]));
  } catch (error) {
    failed++;
    console.error(`bench ${name} failed: ${(error as Error).stack ?? String(error)}`);
    tables.push({ title: `${name}: failed`, columns: ["error"], rows: [[String((error as Error).message ?? error).split("\n")[0]]] });
  }
}
const written = writeTables("all", tables);
console.log(readFileSync(written.markdown, "utf8"));
console.error(`written: ${written.markdown} and ${written.json}`);
process.exit(failed > 0 ? 1 : 0);
