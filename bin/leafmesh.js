#!/usr/bin/env node
// The leafmesh CLI. Node 24 runs the TypeScript sources directly (type stripping).
const major = Number(process.versions.node.split(".")[0]);
if (major < 24) {
  process.stderr.write(
    `leafmesh needs Node.js 24 or newer (this is ${process.version}). Run it through npm (npx leafmesh …, npm run leafmesh -- …), which uses the node@24 package from devDependencies, or install Node 24.\n`,
  );
  process.exit(1);
}
process.removeAllListeners("warning");
// Node opens its inspector (a debugger that runs any code, on 127.0.0.1:9229, for any local user) on SIGUSR1: a
// logrotate script that sends it, as to nginx, would open a root shell to every user of the machine. Not here.
process.on("SIGUSR1", () => process.stderr.write("leafmesh: SIGUSR1 ignored (it does not open Node's inspector here; leafmesh reopens no logs on a signal)\n"));
// The processes that run for long start again at once, in place (execve: same pid, same stdio), with the memory
// settings of their role (bin/memory.js: V8's young generation capped per semi-space, one malloc arena on edge
// nodes). A --max-semi-space-size or a MALLOC_ARENA_MAX of the caller's own (NODE_OPTIONS, node's flags, the
// environment) wins.
const { memoryStart } = await import("./memory.js");
const memory = memoryStart(process.argv[2], process.execArgv, process.env);
if (memory && typeof process.execve === "function") {
  process.execve(process.execPath, [process.execPath, ...memory.flags, ...process.execArgv, ...process.argv.slice(1)], { ...process.env, ...memory.env });
}
// V8's code cache for leafmesh's modules (NODE_COMPILE_CACHE moves it, NODE_DISABLE_COMPILE_CACHE=1
// turns it off): a start no longer strips the types of every TypeScript file and compiles it again.
// Measured: `leafmesh --help` 1.5 s → 0.8 s; the agent's and the hub's start by as much, and the agent
// ~12 MiB less resident (no type stripper loaded). Kept where only this user can write
// (compile-cache.js): in Node's default place, any local user could plant code root's leafmesh runs.
const { enableCompileCache } = await import("node:module");
if (enableCompileCache) {
  const { compileCacheFor } = await import("./compile-cache.js");
  const dir = compileCacheFor(process.env);
  if (typeof dir === "string") enableCompileCache(dir);
  else if (dir) process.stderr.write(`leafmesh: no compile cache (${dir.refused}); starts are slower\n`);
}
const { main } = await import("../cli/main.ts");
const controller = new AbortController();
// SIGHUP too: a terminal that closes (an ssh session that ends) ends its jobs with it. Unhandled, it ended leafmesh at
// once without its stop: an agent left its nftables rules behind (cluster IPs sent to a proxy that was gone).
// A second signal ends leafmesh at once (Ctrl-C again while a stop hangs), but not one within a second of the first:
// that is the same request delivered twice (timeout(1), and supervisors that signal both the process and its group,
// send two SIGTERMs back to back), which ended an agent's clean stop with exit 130 and left its rules behind.
let stopAskedAt = 0;
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => {
    if (controller.signal.aborted) {
      if (performance.now() - stopAskedAt < 1_000) return;
      process.exit(130);
    }
    stopAskedAt = performance.now();
    controller.abort(signal); // the reason: cli/run-until-signal.ts says which signal stopped the process
  });
}
// A reader of stdout that went away (`leafmesh sub | head`): stop as on Ctrl-C, quietly, as a Unix tool stops on
// SIGPIPE (which Node ignores). Unhandled, the EPIPE ended the process with a stack trace.
process.stdout.on("error", (error) => {
  if (error.code !== "EPIPE") throw error;
  if (!controller.signal.aborted) controller.abort();
});
// A stderr reader that went away leaves nowhere to say anything: the command goes on (the logs stop by
// themselves, lib/log.ts). Unhandled, the EPIPE ended the process.
process.stderr.on("error", (error) => {
  if (error.code !== "EPIPE") throw error;
});
const code = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env, signal: controller.signal });
// Stopped to start again with what changed on disk (an agent's bundle replaced: trust/bundle-watch.ts): the same
// command line, in place (the same pid, so a service manager sees no exit). The data directory's lock names this pid
// and is taken back by the new image (lib/lock-owner.ts).
const { startAgainRequested } = await import("../cli/run-until-signal.ts");
if (startAgainRequested() && typeof process.execve === "function") {
  process.execve(process.execPath, [process.execPath, ...process.execArgv, ...process.argv.slice(1)], process.env);
}
process.exitCode = code;
// Long-running commands stop on a signal; one-shot commands end here even if a library left a handle open.
setTimeout(() => process.exit(code), 2_000).unref();
