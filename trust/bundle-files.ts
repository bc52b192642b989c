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
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { decode, fromSeed, type User } from "@nats-io/jwt";
import { LeafmeshError, describeError } from "../lib/errors.ts";
import { parsePsk } from "../services/tunnel/psk.ts";

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

/**
 * The same for a hub's copy of the keys directory (hub/, operator.jwt): before, a damaged hub.crt or
 * account JWT ended the hub with "unexpected error" and a stack, a damaged hub.key, ca.crt or operator.jwt
 * as a nats-server error about a line of its generated configuration, and a damaged publisher.creds as
 * "cannot connect to NATS … is the leafmesh hub running there?". (Account JWTs: key-store.ts allAccountJwts.)
 */
export function checkHubKeyFiles(dir: string): void {
  const damaged = (file: string, what: string, cause?: unknown) =>
    new LeafmeshError("TRUST_FAILED", `${file} is damaged (${what}): copy it again from the keys directory (\`keys init\` made it; the hubs need state.json, operator.jwt, accounts/*.jwt and hub/), or restore it from a backup`, cause === undefined ? undefined : { cause });
  const read = (file: string) => {
    try {
      return readFileSync(file);
    } catch (cause) {
      throw damaged(file, `cannot be read: ${describeError(cause)}`, cause);
    }
  };
  const operator = join(dir, "operator.jwt");
  try {
    decode(read(operator).toString("utf8").trim());
  } catch (cause) {
    if (cause instanceof LeafmeshError) throw cause;
    throw damaged(operator, "not the operator's JWT", cause);
  }
  for (const name of ["hub.crt", "ca.crt"]) {
    const file = join(dir, "hub", name);
    try {
      new X509Certificate(read(file));
    } catch (cause) {
      if (cause instanceof LeafmeshError) throw cause;
      throw damaged(file, "not a certificate", cause);
    }
  }
  const key = join(dir, "hub", "hub.key");
  try {
    createPrivateKey(read(key));
  } catch (cause) {
    if (cause instanceof LeafmeshError) throw cause;
    throw damaged(key, "not a private key", cause);
  }
  for (const name of ["sys.creds", "publisher.creds"]) {
    const file = join(dir, "hub", name);
    const problem = credsProblem(read(file).toString("utf8"));
    if (problem) throw damaged(file, problem);
  }
}

/** Throws TRUST_FAILED naming the first file of `files` that is not what it must be. */
export function checkBundleFiles(files: BundleFiles, node: string): void {
  const damaged = (file: string, what: string, cause?: unknown) =>
    new LeafmeshError(
      "TRUST_FAILED",
      `${file} of node '${node}' is damaged (${what}): copy the node's bundle again (cut short when copied?), or issue it anew with \`leafmesh keys issue --node ${node} --rotate\` (a node that joined with a token: \`leafmesh keys revoke --node ${node}\`, then join again)`,
      cause === undefined ? undefined : { cause },
    );
  const read = (file: string) => {
    try {
      return readFileSync(file);
    } catch (cause) {
      throw damaged(file, `cannot be read: ${describeError(cause)}`, cause);
    }
  };
  const creds = credsProblem(read(files.creds).toString("utf8"));
  if (creds) throw damaged(files.creds, creds);
  for (const [file, what] of [
    [files.cert, "not a certificate"],
    [files.ca, "not the mesh CA's certificate"],
  ] as const) {
    try {
      new X509Certificate(read(file));
    } catch (cause) {
      if (cause instanceof LeafmeshError) throw cause;
      throw damaged(file, what, cause);
    }
  }
  try {
    createPrivateKey(read(files.key));
  } catch (cause) {
    if (cause instanceof LeafmeshError) throw cause;
    throw damaged(files.key, "not a private key", cause);
  }
  try {
    parsePsk(read(files.psk));
  } catch (cause) {
    if (cause instanceof LeafmeshError && cause.code === "TRUST_FAILED") throw cause;
    throw damaged(files.psk, "not in the swarm.key format", cause);
  }
}
