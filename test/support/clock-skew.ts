/**
 * Processes whose wall clock is wrong by a given number of seconds, as an edge box's is without an RTC or NTP: the
 * LD_PRELOAD library of clock-skew.c, compiled once per test process with the machine's C compiler (gcc, which
 * scripts/install.sh installs), and the environment that starts a leafmesh process with it.
 *
 * ```ts
 * await startAgentProcess({ ..., env: skewedClock(-600) });   // this agent's clock is 10 minutes slow
 * ```
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./processes.ts";

let library: string | undefined;

export function skewedClock(seconds: number): NodeJS.ProcessEnv {
  if (!library || !existsSync(library)) {
    const built = join(tempDir("leafmesh-clock-skew-"), "clock-skew.so");
    try {
      execFileSync("cc", ["-shared", "-fPIC", "-O2", "-o", built, join(import.meta.dirname, "clock-skew.c"), "-ldl"], { stdio: "pipe" });
    } catch (error) {
      throw new Error(`the clock-skew tests need a C compiler (Debian packages gcc and libc6-dev; scripts/install.sh installs them): ${(error as Error).message}`);
    }
    library = built;
  }
  return { LD_PRELOAD: library, LEAFMESH_TEST_CLOCK_SKEW_S: String(Math.trunc(seconds)) };
}
