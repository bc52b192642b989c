/**
 * The password a hub's (or a site server's) route and gateway connections must present.
 *
 * Routes and gateways carry every account, the system account's too, and a TLS client
 * certificate of the mesh CA was all they asked for. Every node's certificate is one: with a
 * stolen node's `node.crt` and `node.key`, a client that spoke the route protocol joined a hub's
 * cluster port and received the mesh account's messages (measured on 2.9.10: "Route connection
 * created", then an `RMSG` of a `mesh.*` event published in the mesh account). A site's route
 * port sits on the site's LAN, next to its nodes. Now routes and gateways also need this password,
 * which no node bundle can give:
 *
 * - hubs derive it from the hubs' system user (`hub/sys.creds`, which only hubs and the keys
 *   directory hold), so every hub of a mesh has the same one without a file to copy, and it
 *   survives `keys hub-cert` (a new TLS key) and `keys resign`;
 * - a site's servers read it from their bundle (`routes.secret`), made by the first
 *   `keys issue-site` and kept by every later one, so servers restarted one by one with a new
 *   bundle still route with those not yet restarted.
 *
 * ```ts
 * const credentials = hubRouteCredentials(readFileSync("hub/sys.creds", "utf8"));
 * // cluster { authorization { user, password } } and nats-route://user:password@host:port (nats/render.ts)
 * ```
 */
import { hkdfSync, randomBytes } from "node:crypto";
import { LeafmeshError } from "../lib/errors.ts";

export interface RouteCredentials {
  user: string;
  password: string;
}

export const routeUser = "leafmesh-route";

/** A site bundle's route secret (hex): made once per site, kept by every re-issue. */
export const siteRouteSecretFile = "routes.secret";

export function newRouteSecret(): string {
  return randomBytes(32).toString("hex");
}

/** The hubs' route password, from the seed in the hubs' system user creds. */
export function hubRouteCredentials(systemCredsText: string): RouteCredentials {
  const seed = /-----BEGIN USER NKEY SEED-----\s*(S[A-Z2-7]+)/.exec(systemCredsText)?.[1];
  if (!seed) throw new LeafmeshError("TRUST_FAILED", "hub/sys.creds holds no user seed: the hubs' route password cannot be derived (copy hub/ from the keys directory again)");
  const password = Buffer.from(hkdfSync("sha256", seed, "leafmesh", "hub routes and gateways v1", 32)).toString("hex");
  return { user: routeUser, password };
}

/** A site's route password, from its bundle's secret. */
export function siteRouteCredentials(secretText: string): RouteCredentials {
  const secret = secretText.trim();
  if (!/^[0-9a-f]{64}$/.test(secret)) throw new LeafmeshError("TRUST_FAILED", `the site bundle's ${siteRouteSecretFile} is not 64 hex digits: issue the site again (\`leafmesh keys issue-site\`)`);
  return { user: routeUser, password: secret };
}
