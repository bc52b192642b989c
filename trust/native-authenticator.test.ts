/**
 * leafmesh's own NATS clients sign the server's nonce natively (native-authenticator.ts): the same
 * CONNECT fields as nats.js's authenticators, accepted by a real secured hub, refused with a seed that
 * is not the JWT's key, and no tweetnacl key pair derived or signature made at a connect of the hub's
 * clients or of its trust auditor (nats.js's credsAuthenticator made both at each: bench/herd).
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { connect, credsAuthenticator, jwtAuthenticator, nkeyAuthenticator, type ConnectionOptions } from "@nats-io/transport-node";
import { createUser, fmtCreds } from "@nats-io/jwt";
import { createLogger } from "../lib/log.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { startTrustAuditor } from "./auditor.ts";
import { credsFileAuthenticator, nkeySeedAuthenticator, userJwtAuthenticator } from "./native-authenticator.ts";
import { requireTools, startSecuredHub, stopAllServers, type SecuredHub } from "../test/support/trust-servers.ts";

let base: string;
let keys: string;
let hub: SecuredHub;
const seedText = (pair: { getSeed(): Uint8Array }) => new TextDecoder().decode(pair.getSeed());
const publisherCreds = () => readFileSync(join(keys, "hub", "publisher.creds"));

beforeAll(async () => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-native-auth-"));
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  await issueNode({ dir: keys, node: "edge-a" });
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
}, 60_000);

afterAll(async () => {
  await stopAllServers();
  if (base) rmSync(base, { recursive: true, force: true });
});

describe("native authenticators", () => {
  it("send what nats.js's authenticators send, byte for byte", () => {
    const jwt = /-----BEGIN NATS USER JWT-----\s*(\S+)/.exec(publisherCreds().toString())![1];
    for (let round = 0; round < 5; round++) {
      const user = createUser();
      const seed = seedText(user);
      const creds = fmtCreds(jwt, user);
      // nats-server's nonces are base64url text; a nonce of other characters is signed as its UTF-8 bytes all the same.
      for (const nonce of [randomBytes(11).toString("base64url"), `${randomBytes(8).toString("hex")}é`, undefined, ""]) {
        expect(nkeySeedAuthenticator(seed)(nonce)).toEqual(nkeyAuthenticator(user.getSeed())(nonce));
        expect(userJwtAuthenticator(jwt, seed)(nonce)).toEqual(jwtAuthenticator(jwt, user.getSeed())(nonce));
        expect(credsFileAuthenticator(creds, "x.creds")(nonce)).toEqual(credsAuthenticator(creds)(nonce));
      }
    }
    expect(() => credsFileAuthenticator("-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n", "hub/publisher.creds")).toThrow(/hub\/publisher\.creds is not a creds file/);
    const holder = createUser();
    const damaged = new TextDecoder().decode(fmtCreds(jwt, holder)).replace(seedText(holder), "SUNOTASEED");
    expect(() => credsFileAuthenticator(damaged, "node.creds")).toThrow(/node\.creds: its user seed does not decode/);
  });

  it("log in to a secured hub; a seed that is not the JWT's key is refused", async () => {
    const { tls } = hub.security.publisherConnectOptions;
    // The native authenticator signed the nonce this server sent (secured: it sends one at every connect).
    const signed: (string | undefined)[] = [];
    const native = credsFileAuthenticator(publisherCreds(), "publisher.creds");
    const connection = await connect({ servers: hub.clientUrl, tls, authenticator: (nonce) => (signed.push(nonce), native(nonce)), reconnect: false });
    await connection.flush();
    expect(signed).toEqual([connection.info!.nonce]);
    expect(signed[0]).toMatch(/\S/);
    await connection.close();

    const jwt = /-----BEGIN NATS USER JWT-----\s*(\S+)/.exec(publisherCreds().toString())![1];
    const otherSeed = seedText(createUser());
    await expect(connect({ servers: hub.clientUrl, tls, authenticator: userJwtAuthenticator(jwt, otherSeed), reconnect: false })).rejects.toThrow(/Authorization Violation/);
  });

  it("derive no key pair and make no signature in JavaScript at the connects of the hub's clients and its auditor", async () => {
    // nkeys' key pair class, as nats.js's authenticators reach it: counted, called through, nothing replaced.
    const keyPair = Object.getPrototypeOf(createUser()) as { sign(input: Uint8Array): Uint8Array; getPublicKey(): string };
    const signs = vi.spyOn(keyPair, "sign");
    const derivations = vi.spyOn(keyPair, "getPublicKey");
    try {
      const asHub = (options: Partial<ConnectionOptions>) => connect({ servers: hub.clientUrl, ...options, reconnect: false });
      for (let round = 0; round < 3; round++) {
        for (const options of [hub.security.publisherConnectOptions, hub.security.systemConnectOptions]) {
          const connection = await asHub(options);
          await connection.flush();
          await connection.close();
        }
      }
      const auditor = await startTrustAuditor({
        dir: keys,
        servers: [hub.clientUrl],
        tls: hub.security.publisherConnectOptions.tls,
        systemConnectOptions: hub.security.systemConnectOptions,
        log: createLogger({ level: "info", destination: new Writable({ write: (_chunk, _encoding, done) => done() }) }),
      });
      await auditor.stop();
      expect({ signatures: signs.mock.calls.length, derivations: derivations.mock.calls.length }).toEqual({ signatures: 0, derivations: 0 });
    } finally {
      signs.mockRestore();
      derivations.mockRestore();
    }
  });
});
