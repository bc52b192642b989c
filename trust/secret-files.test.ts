import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmodSync, mkdtempSync, rmSync, statSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { checkSecretFilePermissions, makePrivateDir, writeSecretFile } from "./secret-files.ts";
import { readKeyState, writeKeyState, type KeyState } from "./key-store.ts";

const dir = mkdtempSync(join(tmpdir(), "leafmesh-secrets-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("secret files", () => {
  it("are written 0600 even under a permissive umask, and replaced whole", () => {
    const previous = process.umask(0o000);
    try {
      const path = join(dir, "a.creds");
      writeSecretFile(path, "first");
      writeSecretFile(path, "second");
      expect(statSync(path).mode & 0o777).toBe(0o600);
      expect(readFileSync(path, "utf8")).toBe("second");
      expect(readdirSync(dir).filter((name) => name.endsWith(".tmp"))).toEqual([]);
      makePrivateDir(join(dir, "private"));
      expect(statSync(join(dir, "private")).mode & 0o777).toBe(0o700);
    } finally {
      process.umask(previous);
    }
  });

  it("with group or other access are refused with a message that says what to do", () => {
    const path = join(dir, "loose.creds");
    writeSecretFile(path, "secret");
    expect(() => checkSecretFilePermissions(path)).not.toThrow();
    for (const mode of [0o640, 0o604, 0o644, 0o660, 0o666]) {
      chmodSync(path, mode);
      expect(() => checkSecretFilePermissions(path)).toThrow(`has permissions 0${mode.toString(8)}: group or others may access it, so it is refused. Run \`chmod 600 ${path}\``);
    }
    chmodSync(path, 0o400);
    expect(() => checkSecretFilePermissions(path)).not.toThrow();
  });

  it("missing or not a file: refused, naming the path", () => {
    expect(() => checkSecretFilePermissions(join(dir, "absent.creds"))).toThrow(/absent\.creds cannot be read/);
    expect(() => checkSecretFilePermissions(dir)).toThrow(/is not a regular file/);
  });
});

describe("the keys directory's state on a full disk", () => {
  // A real file system that fills up: a 256 KiB tmpfs (root, as the lab tests; throws otherwise).
  let mount: string;
  beforeAll(() => {
    if (process.getuid?.() !== 0) throw new Error("this test mounts a tmpfs: run it as root");
    mount = mkdtempSync(join(tmpdir(), "leafmesh-full-disk-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mount]);
  });
  afterAll(() => {
    if (!mount) return;
    execFileSync("umount", [mount]);
    rmSync(mount, { recursive: true, force: true });
  });

  it("a write that does not fit leaves the previous state.json whole, with its revocations, and no temporary file", () => {
    const before: KeyState = {
      version: 1,
      operator: "O",
      systemAccount: "AS",
      meshAccount: "AM",
      nodes: { "edge-a": { node: "edge-a", account: "A", issuedAt: "2026-12-06T00:00:00Z", revocations: { UREVOKED: 1 } } },
    };
    writeKeyState(mount, before);
    writeFileSync(join(mount, "filler"), Buffer.alloc(256 * 1024 - 8192), { flag: "w" }); // leaves less than the next state needs
    const grown = structuredClone(before);
    grown.nodes["edge-a"].tags = Array.from({ length: 2000 }, (_, i) => `tag-${i}`);
    expect(() => writeKeyState(mount, grown)).toThrow(/ENOSPC/);
    expect(readKeyState(mount)).toEqual(before);
    expect(readdirSync(mount).sort()).toEqual(["filler", "state.json"]);
  });

  it("a state.json that is not JSON is refused naming the file, not with a parser's stack", () => {
    writeFileSync(join(mount, "state.json"), '{"nodes": {"edge-a"');
    expect(() => readKeyState(mount)).toThrow(/state\.json is not readable mesh state .*restore it from a backup/);
  });
});
