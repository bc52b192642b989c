/**
 * When what a process runs with ends: its certificate (825 days after its issue) and, for a node issued with
 * `keys issue --expires`, its NATS credentials. Said in the log once a day from 30 days before (bundle-watch.ts), and
 * shown by `leafmesh status` at any time, so an operator sees it coming without reading logs.
 *
 * ```ts
 * const ends = loadedEnds({ cert: "keys/node.crt", creds: "keys/node.creds" });
 * endsState(ends, Date.now());   // undefined, or "certificate ends in 12 days", "certificate has ended"
 * ```
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { readCredsClaims } from "./denials.ts";

/** @default 30 days — a certificate that ends sooner is said, once a day, and shown in status. */
export const endsSoonMs = 30 * 86_400_000;
export const dayMs = 86_400_000;

export interface Ending {
  what: "certificate" | "NATS credentials";
  file: string;
  /** ms since the epoch. */
  at: number;
  /** The certificate's start (ms since the epoch). */
  from?: number;
}

/** The certificate's end, and the credentials' when they were issued with one. Throws when the certificate cannot be read. */
export function loadedEnds(files: { cert: string; creds?: string }): Ending[] {
  const cert = new X509Certificate(readFileSync(files.cert));
  return [{ what: "certificate", file: files.cert, at: Date.parse(cert.validTo), from: Date.parse(cert.validFrom) }, ...(files.creds ? credentialsEnd(files.creds) : [])];
}

function credentialsEnd(creds: string): Ending[] {
  try {
    const exp = readCredsClaims(creds)?.exp;
    return exp ? [{ what: "NATS credentials", file: creds, at: exp * 1000 }] : [];
  } catch {
    return [];
  }
}

/**
 * When this machine's clock reads a time before the start of the certificate it runs with (an edge box without an
 * RTC, more than the 7 days certificates are backdated by behind): what that does, in words; else undefined.
 */
export function clockBeforeStart(ends: readonly Ending[], now: number): string | undefined {
  const cert = ends.find((ending) => ending.what === "certificate");
  if (cert?.from === undefined || now >= cert.from) return undefined;
  return `this machine's clock reads ${new Date(now).toISOString()}, before the start of the certificate it runs with (${new Date(cert.from).toISOString()}): its peers' certificates look not yet valid to it, and their node records and tunnels are refused. Set this clock (NTP)`;
}

/** "clock before the certificate's start", "certificate ends in 3 days", "NATS credentials have ended": the first that applies within 30 days, or undefined. */
export function endsState(ends: readonly Ending[], now: number): string | undefined {
  if (clockBeforeStart(ends, now)) return "clock before the certificate's start";
  const soonest = [...ends].sort((a, b) => a.at - b.at)[0];
  if (!soonest || soonest.at - now > endsSoonMs) return undefined;
  return endPhrase(soonest, now);
}

/** "certificate ends in 12 days" (or "has ended"), "NATS credentials end in 1 day". */
export function endPhrase(ending: Ending, now: number): string {
  const left = ending.at - now;
  const one = ending.what === "certificate";
  const days = Math.floor(left / dayMs);
  return `${ending.what} ${left <= 0 ? (one ? "has ended" : "have ended") : `${one ? "ends" : "end"} in ${days} day${days === 1 ? "" : "s"}`}`;
}

/** For status's detail: each end as an ISO time. */
export function endsDetail(ends: readonly Ending[]): { certificateEnds?: string; credentialsEnd?: string } {
  const at = (what: Ending["what"]) => {
    const found = ends.find((ending) => ending.what === what);
    return found ? new Date(found.at).toISOString() : undefined;
  };
  return { certificateEnds: at("certificate"), credentialsEnd: at("NATS credentials") };
}
