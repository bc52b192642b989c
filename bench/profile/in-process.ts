/**
 * A CPU profile of the calling process over a window it chooses, through the
 * inspector in-process (`node:inspector`): what `--cpu-prof` writes, but from
 * `start` to `stop` instead of from launch to exit, so a profile of a transfer
 * holds the transfer and not the minutes of setup and idle around it. For a
 * process the benchmark cannot exit cleanly (a lab node in a namespace, killed
 * at teardown) the profile is written at `stop`, not at exit.
 *
 * ```ts
 * const profiler = await startCpuProfile(250);
 * await transfer();
 * await profiler.stopInto("bench/results/profiles/x/sender.cpuprofile");
 * ```
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";

export interface RunningCpuProfile {
  /** Stops sampling, writes the profile (V8's .cpuprofile JSON) to `file` and says what the window cost. */
  stopInto(file: string): Promise<ProfileWindow>;
}

/**
 * The CPU the window took as the kernel counts it. V8 counts native work done in
 * libuv's poll phase outside JavaScript (a socket read, TLS decrypting what it
 * read, epoll) as "(idle)": the main thread's CPU beside the sampled non-idle
 * time says how much of "(idle)" was work.
 */
export interface ProfileWindow {
  wallMs: number;
  /** User + system time of the main thread (the event loop) over the window. */
  mainThreadCpuMs: number;
  /** User + system time of the whole process (GC helpers, libuv's pool) over the window. */
  processCpuMs: number;
}

const cpuMs = (usage: NodeJS.CpuUsage) => (usage.user + usage.system) / 1000;

/**
 * `intervalUs`: time between samples. V8's default (1,000 µs) gives a second of
 * transfer only a thousand samples; a few hundred µs gives a profile worth
 * reading from a transfer of a second or two, at a cost of a few percent.
 */
export async function startCpuProfile(intervalUs: number): Promise<RunningCpuProfile> {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: intervalUs });
  await session.post("Profiler.start");
  const startedAt = performance.now();
  const threadAtStart = process.threadCpuUsage();
  const processAtStart = process.cpuUsage();
  return {
    async stopInto(file) {
      try {
        const window = { wallMs: performance.now() - startedAt, mainThreadCpuMs: cpuMs(process.threadCpuUsage(threadAtStart)), processCpuMs: cpuMs(process.cpuUsage(processAtStart)) };
        const { profile } = await session.post("Profiler.stop");
        writeFileSync(file, JSON.stringify(profile));
        return window;
      } finally {
        session.disconnect();
      }
    },
  };
}
