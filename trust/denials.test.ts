import { afterAll, describe, expect, it } from "vitest";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createAccount, createUser, fmtCreds } from "@nats-io/jwt";
import { NoRespondersError, PermissionViolationError, RequestError, TimeoutError } from "@nats-io/transport-node";
import { JetStreamApiError } from "@nats-io/jetstream";
import { jserrors } from "@nats-io/jetstream/internal";
import { classifyServerLogLine, diagnoseCredentialsFile, explainDenial, explainLeafRefusal } from "./denials.ts";
import { nodeUserJwt } from "./claims.ts";

const dir = mkdtempSync(join(tmpdir(), "leafmesh-denials-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const seed = (key: { getSeed(): Uint8Array }) => new TextDecoder().decode(key.getSeed());

describe("classifyServerLogLine: nats-server 2.9.10's refusal lines", () => {
  it.each([
    ["[ERR] 127.0.0.1:4 - lid:5 - TLS leafnode handshake error: tls: failed to verify client certificate: x509: certificate signed by unknown authority", "foreign-node-certificate"],
    ["[ERR] 127.0.0.1:4 - lid:5 - TLS leafnode handshake error: x509: certificate signed by unknown authority", "foreign-ca"],
    ["[ERR] 127.0.0.1:4 - lid:5 - TLS handshake error: client didn't provide a certificate", "no-client-certificate"],
    ["[ERR] 127.0.0.1:4 - lid:5 - TLS leafnode handshake error: tls: first record does not look like a TLS handshake", "plaintext-to-tls"],
    ["[ERR] 127.0.0.1:4 - lid:5 - Leafnode Error 'Authorization Violation'", "credentials-refused"],
    ['[ERR] 127.0.0.1:4 - cid:5 - "v1.0.0:nats.js" - Publish Violation - User "UABC", Subject "mesh.edge-b.dns.stats"', "permission-denied"],
    ["[ERR] 127.0.0.1:4 - lid:5 - Leafnode Error 'User Authentication Revoked'", "credentials-revoked"],
    ['[ERR] Error trying to connect as leafnode to remote server "hub-1.example.net:7422" (attempt 3): tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time 2026-12-01T08:00:00Z is before 2026-12-06T12:20:16Z', "clock-behind"],
    ['[ERR] Error trying to connect as leafnode to remote server "hub-1.example.net:7422" (attempt 3): x509: certificate has expired or is not yet valid: current time 2029-03-11T08:00:00Z is after 2029-03-10T12:20:16Z', "certificate-expired"],
  ])("%s", (line, cause) => expect(classifyServerLogLine(line)?.cause).toBe(cause));

  it("ignores ordinary lines", () => {
    expect(classifyServerLogLine("[INF] Server is ready")).toBeUndefined();
  });
});

describe("explainDenial", () => {
  it("names the node, the action and the subject for every denial shape nats.js gives, by its error class", () => {
    const shapes: Error[] = [
      new jserrors.JetStreamNotEnabled("jetstream is not enabled"),
      new RequestError("no responders", { cause: new NoRespondersError("$JS.hub.API.$KV.mesh-nodes.edge-b") }),
      new TimeoutError(),
      new JetStreamApiError({ code: 503, err_code: 10039, description: "jetstream not enabled for account" }),
      new PermissionViolationError("Permissions Violation for Publish to \"$JS.hub.API.$KV.mesh-nodes.edge-b\"", "publish", "$JS.hub.API.$KV.mesh-nodes.edge-b"),
    ];
    for (const shape of shapes) {
      const error = explainDenial(shape, { node: "edge-a", action: "write node record edge-b", subject: "$KV.mesh-nodes.edge-b" });
      expect(error.code, shape.message).toBe("NATS_DENIED");
      expect(error.message).toContain("node 'edge-a' may not write node record edge-b ($KV.mesh-nodes.edge-b)");
    }
    expect(explainDenial(shapes[4], { node: "edge-a", action: "x", subject: "y" }).message).toContain("refused by its own nats-server");
    // A message that merely reads like one is not a denial: the class decides.
    expect(explainDenial(new Error("jetstream is not enabled"), { node: "edge-a", action: "x", subject: "y" }).code).toBe("NATS_UNREACHABLE");
    expect(explainDenial(new Error("connection refused"), { node: "edge-a", action: "x", subject: "y" }).code).toBe("NATS_UNREACHABLE");
  });
});

describe("diagnoseCredentialsFile", () => {
  it("tells an expired file from one the hub refuses for another reason", async () => {
    const account = createAccount();
    const user = createUser();
    const expired = join(dir, "expired.creds");
    writeFileSync(expired, fmtCreds(await nodeUserJwt({ node: "edge-a", userSeed: seed(user), accountSeed: seed(account), expires: 1_000_000 }), user));
    expect(diagnoseCredentialsFile(expired)).toContain("(node 'edge-a') expired at 1970-01-12");
    const current = join(dir, "current.creds");
    writeFileSync(current, fmtCreds(await nodeUserJwt({ node: "edge-a", userSeed: seed(user), accountSeed: seed(account) }), user));
    expect(diagnoseCredentialsFile(current)).toContain("are not expired: the hub refuses them because they were revoked or belong to another mesh");
    const garbage = join(dir, "garbage.creds");
    writeFileSync(garbage, "hello");
    expect(diagnoseCredentialsFile(garbage)).toContain("does not hold a NATS user JWT");
  });
});

describe("explainLeafRefusal", () => {
  it("adds what the creds file says to a refused login, and passes TLS refusals through", async () => {
    const account = createAccount();
    const user = createUser();
    const expired = join(dir, "leaf-expired.creds");
    writeFileSync(expired, fmtCreds(await nodeUserJwt({ node: "edge-a", userSeed: seed(user), accountSeed: seed(account), expires: 1_000_000 }), user));
    expect(explainLeafRefusal("[ERR] 127.0.0.1:7422 - lid:5 - Leafnode Error 'Authorization Violation'", { credsFile: expired })).toContain("the hub refused this node's login at 127.0.0.1:7422: the credentials in");
    expect(explainLeafRefusal("[ERR] 127.0.0.1:7422 - lid:5 - Leafnode Error 'Authorization Violation'", { credsFile: expired })).toContain("expired at");
    expect(explainLeafRefusal("[ERR] x509: certificate signed by unknown authority")).toContain("not signed by this mesh's CA");
    expect(explainLeafRefusal("[ERR] Error trying to connect as leafnode to remote server \"h:7422\" (attempt 1): tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time 2026-12-01T08:00:00Z is before 2026-12-06T12:20:16Z")).toBe(
      "TLS refused: by this machine's clock (2026-12-01T08:00:00Z) a certificate is not valid until 2026-12-06T12:20:16Z: this machine's clock is behind (set it, or let NTP reach a time server); the certificates themselves are fine",
    );
    expect(explainLeafRefusal("[ERR] 127.0.0.1:7422 - lid:5 - Leafnode Error 'User Authentication Revoked'", { credsFile: expired })).toBe(`the hub refused this node's login at 127.0.0.1:7422: credentials revoked: this node's user key was revoked (keys revoke, or replaced by keys issue --rotate): start it with its new bundle (${expired})`);
    expect(explainLeafRefusal("[INF] Server is ready")).toBeUndefined();
  });

  it("names the node's site, not a hub, when the node attaches to a site (--upstream-domain SITE), and where", async () => {
    const account = createAccount();
    const user = createUser();
    const current = join(dir, "site-member.creds");
    writeFileSync(current, fmtCreds(await nodeUserJwt({ node: "edge-j", userSeed: seed(user), accountSeed: seed(account) }), user));
    const refused = explainLeafRefusal("[ERR] 127.0.0.1:7523 - lid:24 - Leafnode Error 'Authorization Violation'", { credsFile: current, site: "shop" });
    expect(refused).toMatch(/^its site 'shop' refused this node's login at 127\.0\.0\.1:7523: the credentials in .* are not expired: its site 'shop' refuses them because they were revoked/);
    expect(refused).not.toContain("hub");
    expect(explainLeafRefusal("[ERR] [::1]:7523 - lid:23 - Leafnode Error 'User Authentication Revoked'", { credsFile: current, site: "shop" })).toMatch(/^its site 'shop' refused this node's login at \[::1\]:7523: credentials revoked/);
    // A node that joined with a token is told only the way back it has: no bundle to be started with.
    const bundle = join(dir, "joined");
    mkdirSync(bundle);
    writeFileSync(join(bundle, "node.creds"), readFileSync(current));
    writeFileSync(join(bundle, "joined.json"), "{}");
    const joined = explainLeafRefusal("[ERR] 127.0.0.1:7523 - lid:23 - Leafnode Error 'User Authentication Revoked'", { credsFile: join(bundle, "node.creds"), site: "shop" });
    expect(joined).toContain(`This node joined with a token: if it was revoked, remove ${bundle} and start it again with a join token`);
    expect(joined).not.toContain("new bundle");
  });
});
