import { afterAll, describe, expect, it } from "vitest";
import { chmodSync, mkdtempSync, rmSync, statSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkSecretFilePermissions, makePrivateDir, writeSecretFile } from "./secret-files.ts";

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
