/**
 * A request's target as the gateway routes it and forwards it: the origin form (path and query),
 * with the authority taken from an absolute-form target (RFC 9112 §3.2.2: it wins over Host) and
 * the path normalized as Istio's gateways do by default (Envoy's `normalize_path`, Istio's BASE):
 * RFC 3986 §6.2.2 — percent-encoded unreserved characters decoded, other encodings' hex upper-cased,
 * dot segments removed, "%2F" and repeated slashes kept. Routing the raw path let "/web/../admin"
 * match the rules of "/web" and reach a backend that reads "/admin".
 *
 * ```ts
 * requestTarget("http://shop.example.com/web/%2e%2e/api?x=1", "other.org");
 * // { authority: "shop.example.com", path: "/api", target: "/api?x=1" }
 * ```
 */

export interface RequestTarget {
  /** The host to route by: the absolute form's authority, else the Host (or :authority) header. */
  authority: string | undefined;
  /** The normalized path, without the query: what path rules match. */
  path: string;
  /** The normalized path and the query as they came: what the backend is sent. */
  target: string;
}

/** A request target in absolute form: the authority, and the rest (path and query). */
const absoluteForm = /^https?:\/\/([^/?#]*)([^#]*)/i;
const unreserved = /^[A-Za-z0-9\-._~]$/;

export function requestTarget(url: string, host: string | undefined): RequestTarget {
  let authority = host;
  let target = url;
  if (url.charCodeAt(0) !== 47 /* "/" */) {
    const absolute = absoluteForm.exec(url);
    if (absolute) {
      authority = absolute[1];
      target = absolute[2].startsWith("/") ? absolute[2] : `/${absolute[2]}`;
    }
  }
  const query = target.indexOf("?");
  const raw = query >= 0 ? target.slice(0, query) : target;
  // Most paths have nothing to normalize: one scan each, no copy.
  if (raw.charCodeAt(0) !== 47 || (!raw.includes("%") && !raw.includes("/."))) return { authority, path: raw, target };
  const path = normalizePath(raw);
  return { authority, path, target: query >= 0 ? path + target.slice(query) : path };
}

/** RFC 3986 §6.2.2 on an absolute path: unreserved characters decoded, other encodings upper-cased, then dot segments removed (§5.2.4). */
export function normalizePath(path: string): string {
  const decoded = path.includes("%")
    ? path.replace(/%([0-9a-fA-F]{2})/g, (_all, hex: string) => {
        const character = String.fromCharCode(Number.parseInt(hex, 16));
        return unreserved.test(character) ? character : `%${hex.toUpperCase()}`;
      })
    : path;
  if (!decoded.includes("/.")) return decoded;
  const segments = decoded.split("/");
  const kept: string[] = [];
  for (let index = 1; index < segments.length; index++) {
    const segment = segments[index];
    const last = index === segments.length - 1;
    if (segment === "." || segment === "..") {
      if (segment === "..") kept.pop();
      if (last) kept.push(""); // "/a/b/.." is "/a/", a directory
      continue;
    }
    kept.push(segment);
  }
  return `/${kept.join("/")}`;
}
