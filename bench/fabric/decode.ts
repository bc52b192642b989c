/**
 * What decoding a fresh agent's catalog costs, in one warm process: the bench's catalog (10,000 services:
 * 20,000 objects) as KV values' text, each JSON.parse'd alone, JSON.parse'd and checked by the catalog's schema
 * (lib/schema, as bus/catalog.ts decodes), and JSON.parse'd and checked by zod 4 reading the same schema
 * (test/support/zod-twin.ts; zod copies every object it checks, lib/schema keeps what fits). The ways take turns,
 * ten measured rounds after two of warm-up; medians and minimums of one pass over the catalog.
 *
 *   node --max-semi-space-size=4 bench/fabric/decode.ts        (the agent's young generation)
 *   LEAFMESH_DECODE_SERVICES=1000 node bench/fabric/decode.ts
 */
import { catalogObjectSchema } from "../../bus/catalog.ts";
import { zodTwin } from "../../test/support/zod-twin.ts";
import { normalisedCatalog } from "./catalog.ts";

const count = Number(process.env.LEAFMESH_DECODE_SERVICES ?? 10_000);
const texts = normalisedCatalog(count).map(([, object]) => JSON.stringify(object));
const zodSchema = zodTwin(catalogObjectSchema);

const ways: Record<string, (text: string) => unknown> = {
  "JSON.parse alone": (text) => JSON.parse(text),
  "JSON.parse + lib/schema": (text) => catalogObjectSchema.parse(JSON.parse(text)),
  "JSON.parse + zod 4": (text) => zodSchema.parse(JSON.parse(text)),
};

const passes: Record<string, number[]> = {};
let decoded = 0;
for (let round = 0; round < 12; round++) {
  for (const [name, decode] of Object.entries(ways)) {
    const started = performance.now();
    for (const text of texts) if (decode(text)) decoded++;
    if (round >= 2) (passes[name] ??= []).push(performance.now() - started);
  }
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
process.stdout.write(`decode of ${texts.length.toLocaleString("en")} catalog objects (${decoded.toLocaleString("en")} decoded in all), ms a pass:\n`);
for (const [name, values] of Object.entries(passes)) process.stdout.write(`  ${name.padEnd(26)} median ${median(values).toFixed(1)}, min ${Math.min(...values).toFixed(1)}\n`);
