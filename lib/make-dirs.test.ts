import { mkdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDir } from "../test/support/processes.ts";
import { makeDirectories } from "./make-dirs.ts";

describe("makeDirectories", () => {
  it("makes a path and its missing parents, with the mode asked, and takes one that exists", () => {
    const base = tempDir();
    const path = join(base, "a", "b", "c");
    makeDirectories(path, 0o700);
    expect(statSync(path).isDirectory()).toBe(true);
    expect(statSync(join(base, "a")).mode & 0o777).toBe(0o700);
    expect(() => makeDirectories(path)).not.toThrow();
    expect(() => makeDirectories(base)).not.toThrow();
  });

  it("ends with mkdir's error where Node's recursive mkdir spins for ever (a path under /proc)", () => {
    // Node 24's mkdirSync(…, { recursive: true }) never returns here: ENOENT for the child, EEXIST for /proc, again.
    expect(() => makeDirectories("/proc/leafmesh-test/data")).toThrow(/ENOENT/);
  });

  it("says what stands in the way: a file, a dangling symlink", () => {
    const base = tempDir();
    writeFileSync(join(base, "file"), "x");
    expect(() => makeDirectories(join(base, "file"))).toThrow(/EEXIST/);
    expect(() => makeDirectories(join(base, "file", "below"))).toThrow(/ENOTDIR/);
    mkdirSync(join(base, "mnt"));
    symlinkSync(join(base, "mnt", "sdcard-not-mounted"), join(base, "sdcard"));
    expect(() => makeDirectories(join(base, "sdcard", "leafmesh"))).toThrow(/ENOENT/);
  });
});
