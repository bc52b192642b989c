/**
 * Test support: prints `{ key: revision }` of a KV bucket on a secured hub, as the
 * hub's publisher (the mesh account). Run inside a lab namespace:
 * `node test/support/kv-keys.ts KEYS_DIR nats://127.0.0.1:4222 mesh-nodes`.
 */
import { Kvm } from "@nats-io/kv";
import { connectNats } from "../../bus/connect.ts";
import { clientConnectOptions } from "../../cli/security-options.ts";

const [keys, url, bucket] = process.argv.slice(2);
const connection = await connectNats({ ...clientConnectOptions({ keys }), servers: [url], name: "kv-keys", keepReconnecting: false });
const kv = await new Kvm(connection).open(bucket);
const entries: Record<string, number> = {};
for await (const key of await kv.keys()) entries[key] = (await kv.get(key))?.revision ?? -1;
console.log(JSON.stringify(entries));
await connection.close();
