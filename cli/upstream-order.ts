import { LeafmeshError } from "../lib/errors.ts";

/** --upstream-order: "rtt" (nearest first) or "given". */
export function parseUpstreamOrder(text: string): "rtt" | "given" {
  if (text !== "rtt" && text !== "given") throw new LeafmeshError("CONFIG_INVALID", `--upstream-order: '${text}' is not rtt or given`);
  return text;
}
