/**
 * A stopped tunnel host leaves nothing that keeps its process alive. libp2p 3.3's address manager debounces its
 * peer-store update by 1 s at each listener's close and never stops that timer: every agent stopped by a signal lived
 * on for a second after "stopped" (and then wrote to a stopped peer store). Checked in a process of its own, as an
 * agent's is: what keeps its event loop alive a moment after the stop.
 */
import { execFileSync } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { nodeBinary } from "../../test/support/processes.ts";

const script = `
import { randomBytes } from "node:crypto";
import { startTunnelHost } from ${JSON.stringify(resolve(import.meta.dirname, "host.ts"))};
import { parsePsk } from ${JSON.stringify(resolve(import.meta.dirname, "psk.ts"))};
import { silentLogger } from ${JSON.stringify(resolve(import.meta.dirname, "../../lib/log.ts"))};
const psk = parsePsk("/key/swarm/psk/1.0.0/\\n/base16/\\n" + randomBytes(32).toString("hex") + "\\n");
const host = await startTunnelHost({ node: "stop-a", listen: ["/ip4/127.0.0.1/tcp/0"], psk, log: silentLogger(), mdns: false });
await host.stop();
await new Promise((resolve) => setTimeout(resolve, 100));
console.log(JSON.stringify(process.getActiveResourcesInfo()));
`;

describe("a tunnel host, stopped", () => {
  it("leaves no timer or handle that keeps its process alive", () => {
    const output = execFileSync(nodeBinary, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 20_000 });
    // Its stdio (pipes to this test) aside.
    const alive = (JSON.parse(output.trim().split("\n").at(-1)!) as string[]).filter((resource) => resource !== "PipeWrap" && resource !== "TTYWrap");
    expect(alive).toEqual([]);
  });
});
