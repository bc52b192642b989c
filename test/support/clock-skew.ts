/**
 * Processes whose wall clock is wrong by a given number of seconds, as an edge box's is without an RTC or NTP, or
 * whose clock is set while they run: the LD_PRELOAD library of clock-skew.c, compiled once per test process with the
 * machine's C compiler (gcc, which scripts/install.sh installs), and the environment that starts a process with it.
 *
 * ```ts
 * await startAgentProcess({ ..., env: skewedClock(-600) });   // this agent's clock is 10 minutes slow
 * const clock = settableClock();
 * await startAgentProcess({ ..., env: clock.env });
 * clock.set(-3_600);                                          // NTP sets it an hour back (seen within 200 ms)
 * ```
 */
import { execFileSync } from "node:child_process";
import { existsSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./processes.ts";

let library: string | undefined;

export function skewedClock(seconds: number): NodeJS.ProcessEnv {
  return { LD_PRELOAD: clockLibrary(), LEAFMESH_TEST_CLOCK_SKEW_S: String(Math.trunc(seconds)) };
}

/** A wall clock a test sets while the process runs: `set(seconds)` moves it from the true time. */
export function settableClock(): { env: NodeJS.ProcessEnv; set(seconds: number): void } {
  const file = join(tempDir("leafmesh-clock-"), "offset");
  writeFileSync(file, "0\n");
  return {
    env: { LD_PRELOAD: clockLibrary(), LEAFMESH_TEST_CLOCK_SKEW_FILE: file },
    set(seconds) {
      // Whole, by a rename: the library never reads half a number.
      writeFileSync(`${file}.next`, `${Math.trunc(seconds)}\n`);
      renameSync(`${file}.next`, file);
    },
  };
}

function clockLibrary(): string {
  if (!library || !existsSync(library)) {
    const built = join(tempDir("leafmesh-clock-skew-"), "clock-skew.so");
    try {
      execFileSync("cc", ["-shared", "-fPIC", "-O2", "-o", built, join(import.meta.dirname, "clock-skew.c"), "-ldl"], { stdio: "pipe" });
    } catch (error) {
      throw new Error(`the clock-skew tests need a C compiler (Debian packages gcc and libc6-dev; scripts/install.sh installs them): ${(error as Error).message}`);
    }
    library = built;
  }
  return library;
}
