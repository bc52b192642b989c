/**
 * A catalog put event (`meshEvents.catalog`, the same text encodeCatalogEvent makes) built as the bytes the bus
 * sends, from the KV value's own bytes, when the controller receives the value; its time is written in when its
 * batch goes out.
 *
 * Why bytes: the controller holds each change until its batch goes out (one turn of the event loop, thousands of
 * entries while a mirror catches up). Held as text, every value's string lived through young collections and was
 * copied by them, and at the batch the event's text was flattened and encoded to UTF-8 again by nats.js: about a
 * third of what a fresh agent allocated per catalog object (bench/profile/heap-sampling-preload.ts, issue 17). A
 * copy of the value outside V8's heap is not moved by a collection, and nats.js sends bytes as they are. A copy,
 * not the value itself: a KV value is a view of the socket chunk it came in, which it would keep alive.
 *
 * ```ts
 * const event = catalogPutEventBytes(key, revision, entry.value); // at the entry
 * bus.publishJson("controller", "catalog", stampCatalogEvent(event, nowIso())); // at the batch
 * ```
 */
import { Buffer } from "node:buffer";

/** nowIso()'s length for the years 0 to 9999: the place kept for the time. */
const atLength = "2026-12-07T12:00:00.000Z".length;
const atStart = '{"at":"'.length;
const atPlaceholder = "0".repeat(atLength);
const closingBrace = 0x7d;

/** The put of `key` at `revision` with the KV value's bytes as its object, its time still to be stamped. */
export function catalogPutEventBytes(key: string, revision: number, value: Uint8Array): Buffer {
  const head = `{"at":"${atPlaceholder}","op":"put","key":${JSON.stringify(key)},"revision":${revision},"object":`;
  const headLength = Buffer.byteLength(head);
  // Its own memory, not a slice of Node's shared pool: a held slice keeps the pool's whole 8 KiB alive.
  const event = Buffer.allocUnsafeSlow(headLength + value.length + 1);
  event.write(head, 0, "utf8");
  event.set(value, headLength);
  event[event.length - 1] = closingBrace;
  return event;
}

/** The event with its time written in; a time of another length (a year past 9999) makes the event again as text. */
export function stampCatalogEvent(event: Buffer, at: string): Buffer | string {
  if (at.length === atLength) {
    event.write(at, atStart, "latin1");
    return event;
  }
  return `{"at":${JSON.stringify(at)}${event.toString("utf8", atStart + atLength + 1)}`;
}
