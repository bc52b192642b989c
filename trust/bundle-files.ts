/**
 * A node's bundle read as what each file must be before anything starts. A file cut short when copied (or
 * by a disk fault) used to show as a nats-server configuration error naming a line of a generated file
 * (node.key, ca.crt), or not at all: with a damaged node.creds the agent ran on for good with its leaf
 * never connecting, one "Credentials file malformed" line in its log. Now the file is named, with what to do.
 *
 * ```ts
 * checkBundleFiles(security.files, "edge-a"); // throws TRUST_FAILED naming the damaged file
 * ```
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { decode, fromSeed, type User } from "@nats-io/jwt";
import { LeafmeshError, describeError } from "../lib/errors.ts";

export interface BundleFiles {
  creds: string;
  cert: string;
  key: string;
  ca: string;
  psk: string;
}

/** The user JWT's subject and the seed's public key of a creds text, or why it is not whole. */
export function credsProblem(text: string): string | undefined {
  const jwt = /-----BEGIN NATS USER JWT-----\s*(\S+)\s*------END NATS USER JWT------/.exec(text)?.[1];
  if (!jwt) return "no whole user JWT in it";
  let subject: string;
  try {
    subject = decode<User>(jwt).sub;
  } catch (error) {
    return `its user JWT does not decode (${describeError(error)})`;
  }
  const seed = /-----BEGIN USER NKEY SEED-----\s*(\S+)\s*------END USER NKEY SEED------/.exec(text)?.[1];
  if (!seed) return "no whole user seed in it";
  let publicKey: string;
  try {
    publicKey = fromSeed(new TextEncoder().encode(seed)).getPublicKey();
  } catch (error) {
    return `its user seed does not decode (${describeError(error)})`;
  }
  return publicKey === subject ? undefined : "its seed is not the key of its JWT (parts of two issues?)";
}

type FileKind = "creds" | "certificate" | "private key" | "JWT" | "swarm.key" | "JSON";

/** Why `bytes` are not a file of `kind`, or undefined when they are. */
function kindProblem(kind: FileKind, bytes: Buffer): string | undefined {
  try {
    switch (kind) {
      case "creds":
        return credsProblem(bytes.toString("utf8"));
      case "certificate":
        new X509Certificate(bytes);
        return undefined;
      case "private key":
        createPrivateKey(bytes);
        return undefined;
      case "JWT":
        decode(bytes.toString("utf8").trim());
        return undefined;
      case "swarm.key": {
        // The go-ipfs swarm.key format the tunnel reads (services/tunnel/psk.ts parsePsk; trust imports no actor).
        const lines = bytes.toString("utf8").trim().split(/\r?\n/);
        const whole = lines.length === 3 && lines[0] === "/key/swarm/psk/1.0.0/" && lines[1] === "/base16/" && /^[0-9a-fA-F]{64}$/.test(lines[2]);
        return whole ? undefined : "not in the swarm.key format: three lines '/key/swarm/psk/1.0.0/', '/base16/' and 64 hex digits";
      }
      case "JSON":
        JSON.parse(bytes.toString("utf8"));
        return undefined;
    }
  } catch (error) {
    const what = { creds: "creds", certificate: "a certificate", "private key": "a private key", JWT: "a JWT", "swarm.key": "in the swarm.key format", JSON: "JSON" }[kind];
    return `not ${what}: ${describeError(error)}`;
  }
}

/** Throws TRUST_FAILED, worded by `advice`, naming the first of `files` that cannot be read or is not of its kind. */
function checkFiles(files: [string, FileKind][], advice: string): void {
  for (const [file, kind] of files) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (cause) {
      throw new LeafmeshError("TRUST_FAILED", `${file} is damaged (cannot be read: ${describeError(cause)}): ${advice}`, { cause });
    }
    const problem = kindProblem(kind, bytes);
    if (problem) throw new LeafmeshError("TRUST_FAILED", `${file} is damaged (${problem}): ${advice}`);
  }
}

/**
 * The same for a hub's copy of the keys directory (hub/, operator.jwt): before, a damaged hub.crt or
 * account JWT ended the hub with "unexpected error" and a stack, a damaged hub.key, ca.crt or operator.jwt
 * as a nats-server error about a line of its generated configuration, and a damaged publisher.creds as
 * "cannot connect to NATS … is the leafmesh hub running there?". (Account JWTs: key-store.ts allAccountJwts.)
 */
export function checkHubKeyFiles(dir: string): void {
  checkFiles(
    [
      [join(dir, "operator.jwt"), "JWT"],
      [join(dir, "hub", "hub.crt"), "certificate"],
      [join(dir, "hub", "ca.crt"), "certificate"],
      [join(dir, "hub", "hub.key"), "private key"],
      [join(dir, "hub", "sys.creds"), "creds"],
      [join(dir, "hub", "publisher.creds"), "creds"],
    ],
    "copy it again from the keys directory (`keys init` made it; the hubs need state.json, operator.jwt, accounts/*.jwt and hub/), or restore it from a backup",
  );
}

/**
 * The same for a site server's bundle. Before, a damaged site.json or site.crt ended it with "unexpected error"
 * and a stack, site.key or ca.crt as a nats-server configuration error, and a damaged claims.creds, server or
 * member creds not at all: the server ran on with that leaf remote never connecting (claims.creds: revocations
 * pushed at the hubs never reached the site).
 */
/** `part`: site.json alone (read before the server is looked up in it), or the rest (once it is known to be one of the site's). */
export function checkSiteBundleFiles(bundle: string, options: { site: string; server: string; part: "description" | "rest" }): void {
  const advice = `copy the site's bundle again (cut short when copied?), or issue it anew with \`leafmesh keys issue-site --site ${options.site}\``;
  if (options.part === "description") return checkFiles([[join(bundle, "site.json"), "JSON"]], advice);
  const creds = (dir: string) => {
    try {
      return readdirSync(join(bundle, dir)).filter((file) => file.endsWith(".creds")).map((file) => [join(bundle, dir, file), "creds"] as [string, FileKind]);
    } catch {
      return [];
    }
  };
  checkFiles(
    [
      [join(bundle, "operator.jwt"), "JWT"],
      [join(bundle, "site.crt"), "certificate"],
      [join(bundle, "ca.crt"), "certificate"],
      [join(bundle, "site.key"), "private key"],
      [join(bundle, "local.creds"), "creds"],
      [join(bundle, "servers", `${options.server}.creds`), "creds"],
      ...(existsSync(join(bundle, "claims.creds")) ? [[join(bundle, "claims.creds"), "creds"] as [string, FileKind]] : []),
      ...creds("members"),
    ],
    advice,
  );
}

/** Throws TRUST_FAILED naming the first file of `files` that is not what it must be. */
export function checkBundleFiles(files: BundleFiles, node: string): void {
  checkFiles(
    [
      [files.creds, "creds"],
      [files.cert, "certificate"],
      [files.ca, "certificate"],
      [files.key, "private key"],
      [files.psk, "swarm.key"],
    ],
    `copy node '${node}''s bundle again (cut short when copied?), or issue it anew with \`leafmesh keys issue --node ${node} --rotate\` (a node that joined with a token: \`leafmesh keys revoke --node ${node}\`, then join again)`,
  );
}
