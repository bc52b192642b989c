import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmodSync, mkdtempSync, rmSync, statSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync, spawn } from "node:child_process";
import { checkSecretFilePermissions, makePrivateDir, writeSecretFile, writeSecretFileOnce } from "./secret-files.ts";
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
    const before: KeyState = { nodes: { "edge-a": { node: "edge-a", account: "A", issuedAt: "2026-12-06T00:00:00Z", revocations: { UREVOKED: 1 } } } } as unknown as KeyState;
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
