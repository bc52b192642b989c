/**
 * A TLS Secret whose key is not its certificate's: the hub refuses one (normalize-ingress.ts), but a catalog
 * written by a hub of an older leafmesh could hold it. Its HTTPS clients are reset and counted, the agent
 * lives, says it once, and its plain HTTP port keeps serving.
 */
import { get } from "node:http";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey, type CatalogObject } from "../../bus/catalog.ts";
import { normalizeObject } from "../controller/normalize.ts";
import { selfSignedCertificate } from "../../test/support/certificates.ts";
import { startGatewayBackends, type GatewayBackends } from "../../test/support/gateway-backends.ts";
import { backendManifests, certificateSecrets, ingressManifests } from "../../test/support/gateway-manifests.ts";
import { capturedLog } from "../../test/support/log-lines.ts";
import { freePort } from "../../test/support/ports.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";

let backends: GatewayBackends;
let gateway: GatewayActor;
const ports = { http: 0, https: 0, tls: 0, tcp: 0 };
const { log, lines } = capturedLog("info");

beforeAll(async () => {
  backends = await startGatewayBackends({ host: "127.0.0.1", basePort: 0 });
  for (const key of Object.keys(ports) as (keyof typeof ports)[]) ports[key] = await freePort();
  const feed = new IndexFeed();
  for (const raw of [...ingressManifests("gateway-api", { ports }), ...backendManifests(backends.endpoints()), ...certificateSecrets()]) {
    const result = normalizeObject(raw);
    if (result.status !== "ok") throw new Error(`fixture object refused: ${JSON.stringify(result)}`);
    let object: CatalogObject = result.object;
    // secure-cert's key swapped for another certificate's: what the hub refuses, put straight into the catalog.
    if (object.kind === "TLSSecret" && object.name === "secure-cert") object = { ...object, privateKey: selfSignedCertificate(["other.example.com"]).key };
    feed.reader.apply({ op: "put", key: catalogKey(object), object });
  }
  gateway = createGatewayActor({ feed, log, node: "edge-a", listenHost: "127.0.0.1", access: () => undefined });
  await gateway.start();
}, 60_000);

afterAll(async () => {
  await gateway?.stop();
  await backends?.close();
});

function handshake(): Promise<string> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: "127.0.0.1", port: ports.https, servername: "secure.example.com", rejectUnauthorized: false });
    socket.once("secureConnect", () => {
      socket.destroy();
      resolve("handshake");
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

describe("a TLS Secret whose key is not its certificate's", () => {
  it("resets its HTTPS clients, counted and said once, and the agent and its other ports serve on", async () => {
    for (let attempt = 0; attempt < 3; attempt++) expect(await handshake()).toBe("ECONNRESET");
    expect((gateway.status().counters as Record<string, number>)["tls certificate unusable"]).toBe(3);
    expect(lines.filter((line) => line.msg === "TLS certificate of the Secret cannot be used; its clients are reset (counted)")).toHaveLength(1);
    const body = await new Promise<string>((resolve, reject) => {
      get({ host: "127.0.0.1", port: ports.http, path: "/exact", headers: { host: "shop.example.com" } }, (response) => {
        let text = "";
        response.on("data", (chunk: Buffer) => (text += chunk.toString()));
        response.on("end", () => resolve(text));
      }).on("error", reject);
    });
    expect(body).toBe("exact\n");
  });
});
