/**
 * The compile cache's directory (bin/compile-cache.js), and the attack it stands
 * against: a local user who creates the cache directory first plants a cache
 * entry (a TypeScript file's stripped source behind two CRC32s) that leafmesh,
 * run by root, would execute in place of its own code.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { crc32 } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { cliPath, nodeBinary } from "./support/processes.ts";
import { privateCompileCacheDir } from "../bin/compile-cache.js";

const root = resolve(import.meta.dirname, "..");
const isRoot = process.getuid?.() === 0;
const nobody = 65534;
const magic = 0x8adfdbb2;

describe("the compile cache's directory", () => {
  const made: string[] = [];
  const scratch = (mode = 0o1777) => {
    const dir = mkdtempSync(join(tmpdir(), "lm-cc-"));
    chmodSync(dir, mode);
    made.push(dir);
    return dir;
  };
  afterEach(() => {
    for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it("is turned on before bin/leafmesh.js imports any TypeScript (one .ts file before it loads Node's type stripper in every process: +12 MiB, +0.1 s)", () => {
    const bin = readFileSync(join(root, "bin/leafmesh.js"), "utf8");
    const enabled = bin.indexOf("enableCompileCache(dir)");
    const firstTs = bin.search(/import\([^)]*\.ts"\)|from "[^"]*\.ts"/);
    expect(enabled).toBeGreaterThan(0);
    expect(firstTs).toBeGreaterThan(enabled);
    expect(readFileSync(join(root, "bin/compile-cache.js"), "utf8")).not.toMatch(/from "[^"]*\.ts"/);
  });

  it("is made for this user alone, in a sticky parent, and used again when it is still so", () => {
    const parent = scratch();
    const dir = privateCompileCacheDir(parent);
    expect(dir).toBe(join(parent, `leafmesh-compile-cache-${process.getuid!()}`));
    expect(execFileSync("stat", ["-c", "%a %u", dir as string], { encoding: "utf8" }).trim()).toBe(`700 ${process.getuid!()}`);
    expect(privateCompileCacheDir(parent)).toBe(dir);
  });

  it("is refused when it is open to others, a symlink, or in a parent others can rename it in", () => {
    const open = scratch();
    mkdirSync(join(open, `leafmesh-compile-cache-${process.getuid!()}`), { mode: 0o777 });
    chmodSync(join(open, `leafmesh-compile-cache-${process.getuid!()}`), 0o777);
    expect(privateCompileCacheDir(open)).toEqual({ refused: expect.stringContaining("is open to other users (mode 777)") });

    const linked = scratch();
    symlinkSync(scratch(0o700), join(linked, `leafmesh-compile-cache-${process.getuid!()}`));
    expect(privateCompileCacheDir(linked)).toEqual({ refused: expect.stringContaining("is not a directory (a symlink?)") });

    const loose = scratch(0o777); // writable by all, not sticky
    expect(privateCompileCacheDir(loose)).toEqual({ refused: `${loose} is writable by other users and not sticky` });
  });

  it.skipIf(!isRoot)("is refused when another user made it first (skipped unless root: a directory of another owner needs chown)", () => {
    const parent = scratch();
    const theirs = join(parent, `leafmesh-compile-cache-${process.getuid!()}`);
    mkdirSync(theirs, { mode: 0o700 });
    chownSync(theirs, nobody, nobody);
    expect(privateCompileCacheDir(parent)).toEqual({ refused: `${theirs} belongs to uid ${nobody}, not ${process.getuid!()}` });
  });

  it.skipIf(!isRoot)("root's leafmesh never runs code another user planted in a cache directory made first (skipped unless root: the attack needs two users)", () => {
    // Learn the cache entry of cli/main.ts's stripped source: its name and layout, as Node writes them.
    const learned = scratch(0o700);
    execFileSync(nodeBinary, [cliPath, "--help"], { env: { ...process.env, NODE_COMPILE_CACHE: learned }, stdio: "ignore" });
    const version = readdirSync(learned)[0];
    const source = readFileSync(join(root, "cli/main.ts"));
    const entryName = readdirSync(join(learned, version)).find((name) => {
      const entry = readFileSync(join(learned, version, name));
      return entry.readUInt32LE(0) === magic && entry.readUInt32LE(4) === source.length && entry.readUInt32LE(12) === crc32(source);
    })!;
    expect(entryName).toBeDefined();
    const payload = Buffer.from('console.log("HIJACKED as uid " + process.getuid()); process.exit(0);\n');
    const header = Buffer.alloc(20);
    [magic, source.length, payload.length, crc32(source), crc32(payload)].forEach((value, i) => header.writeUInt32LE(value >>> 0, i * 4));
    // The other user's directories, made before leafmesh ever ran: Node's default place and leafmesh's own name.
    const parent = scratch();
    for (const name of ["node-compile-cache", `leafmesh-compile-cache-${process.getuid!()}`]) {
      mkdirSync(join(parent, name, version), { recursive: true });
      writeFileSync(join(parent, name, version, entryName), Buffer.concat([header, payload]));
      execFileSync("chown", ["-R", `${nobody}:${nobody}`, join(parent, name)]);
      execFileSync("chmod", ["-R", "777", join(parent, name)]);
    }
    const { NODE_COMPILE_CACHE: _chosen, NODE_DISABLE_COMPILE_CACHE: _off, ...inherited } = process.env;
    const env = { ...inherited, TMPDIR: parent };
    // The planted entry works where a process takes that directory as its cache (Node's default would have):
    const planted = spawnSync(nodeBinary, [cliPath, "--help"], { env: { ...env, NODE_COMPILE_CACHE: join(parent, "node-compile-cache") }, encoding: "utf8" });
    expect(planted.stdout).toContain("HIJACKED as uid 0");
    // leafmesh itself refuses the other user's directory and runs its own code.
    const run = spawnSync(nodeBinary, [cliPath, "--help"], { env, encoding: "utf8" });
    expect(run.stdout).not.toContain("HIJACKED");
    expect(run.stdout).toContain("leafmesh");
    expect(run.stderr).toContain(`no compile cache (${join(parent, `leafmesh-compile-cache-${process.getuid!()}`)} belongs to uid ${nobody}, not 0)`);
  });
});
