import { afterAll, describe, expect, it } from "vitest";
import { chmodSync, mkdtempSync, rmSync, statSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { checkSecretFilePermissions, makePrivateDir, writeSecretFile, writeSecretFileOnce } from "./secret-files.ts";

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

  it("made once by whoever comes first: a second writer keeps the first one's secret, and no temporary file is left", () => {
    const path = join(dir, "local.nk");
    expect(writeSecretFileOnce(path, "first")).toBe(true);
    expect(writeSecretFileOnce(path, "second")).toBe(false);
    expect(readFileSync(path, "utf8")).toBe("first");
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).filter((name) => name.includes(".tmp"))).toEqual([]);
  });

  it("made at once by eight processes (an agent and status runs beside it): all of them read the one key on disk", async () => {
    const path = join(dir, "raced.nk");
    const script = `
      const { writeSecretFileOnce } = await import(${JSON.stringify(join(import.meta.dirname, "secret-files.ts"))});
      const { readFileSync } = await import("node:fs");
      const mine = "seed-" + process.pid;
      const start = Number(process.argv[1]);
      while (Date.now() < start) {} // all eight race at the same moment
      writeSecretFileOnce(${JSON.stringify(path)}, mine);
      process.stdout.write(readFileSync(${JSON.stringify(path)}, "utf8"));`;
    const start = Date.now() + 1_500;
    const seen = await Promise.all(
      Array.from({ length: 8 }, () => new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ["--input-type=module", "-e", script, String(start)], { stdio: ["ignore", "pipe", "inherit"] });
        let out = "";
        child.stdout.on("data", (chunk: Buffer) => (out += chunk));
        child.on("error", reject);
        child.on("exit", () => resolve(out));
      })),
    );
    const onDisk = readFileSync(path, "utf8");
    expect(new Set(seen)).toEqual(new Set([onDisk]));
  });
});
