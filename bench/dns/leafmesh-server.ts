/**
 * The leafmesh DNS actor alone in its own process, as unbound and dnsmasq run
 * in theirs: `node bench/dns/leafmesh-server.ts <port>` serves the benchmark's
 * 1,000 services on 127.0.0.1:<port> and prints "ready <port>".
 */
import { createLogger } from "../../lib/log.ts";
import { createDnsActor } from "../../services/dns/index.ts";
import { feedOf } from "../../test/support/dns-catalog.ts";
import { benchCatalog } from "./catalog.ts";

const port = Number(process.argv[2] ?? 0);
const dns = createDnsActor({ feed: feedOf(benchCatalog()), log: createLogger({ level: "warn" }), listen: { host: "127.0.0.1", port }, upstreams: [] });
const address = await dns.start();
console.log(`ready ${address.port}`);
process.on("SIGTERM", () => {
  void dns.stop().then(() => process.exit(0));
});
