/**
 * Certificates issued near the mesh CA's end end with it. Before, a node's certificate issued in the CA's last
 * 825 days said it ended up to two years after the CA, so the node's "certificate ends in N days" warnings and
 * its status told a date after the day its peers stop accepting it (nothing the CA signed verifies then).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { createCertificateAuthority } from "./tls.ts";
import { loadedEnds } from "./ends.ts";
import { requireTools } from "../test/support/trust-servers.ts";

let base: string;
beforeAll(() => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-ca-end-"));
});
afterAll(() => {
  if (base) rmSync(base, { recursive: true, force: true });
});

const ends = (file: string) => Date.parse(new X509Certificate(readFileSync(file)).validTo);

describe("a mesh CA near its end", () => {
  it("a node issued 100 days before the CA ends gets a certificate that ends with the CA", async () => {
    const keys = join(base, "keys");
    await initKeys({ dir: keys });
    // The CA of a mesh in its tenth year: 100 days left.
    await createCertificateAuthority({ certFile: join(keys, "ca", "ca.crt"), keyFile: join(keys, "ca", "ca.key"), name: "leafmesh mesh CA", days: 100 });
    const { bundleDir } = await issueNode({ dir: keys, node: "edge-a" });
    const caEnd = ends(join(keys, "ca", "ca.crt"));
    expect(ends(join(bundleDir, "node.crt"))).toBeLessThanOrEqual(caEnd);
    expect(new X509Certificate(readFileSync(join(bundleDir, "node.crt"))).verify(new X509Certificate(readFileSync(join(keys, "ca", "ca.crt"))).publicKey)).toBe(true);
    // what the node's warnings and status read
    expect(loadedEnds({ cert: join(bundleDir, "node.crt") })[0].at).toBeLessThanOrEqual(caEnd);
  });

  it("a CA that has ended signs nothing, and says why", async () => {
    const keys = join(base, "keys-ended");
    await initKeys({ dir: keys });
    await createCertificateAuthority({ certFile: join(keys, "ca", "ca.crt"), keyFile: join(keys, "ca", "ca.key"), name: "leafmesh mesh CA", days: 0 });
    await expect(issueNode({ dir: keys, node: "edge-a" })).rejects.toThrow(/the mesh CA \(.*ca\.crt\) ended at .*nothing it signs is valid/);
  });
});
