import { describe, expect, it } from "vitest";
import { connectRequest, explainProxyProblem, maxReplyHeadBytes, parseHubProxy, readConnectReply } from "./hub-proxy.ts";

describe("parseHubProxy", () => {
  it("takes http://USER:PASSWORD@HOST:PORT, sends Basic credentials and never shows the password", () => {
    const proxy = parseHubProxy("http://leaf%40mesh:s%3Acret@proxy.factory.lan:8080", "--hub-proxy");
    expect(proxy).toMatchObject({ host: "proxy.factory.lan", port: 8080, user: "leaf@mesh", shown: "http://leaf%40mesh:***@proxy.factory.lan:8080" });
    expect(Buffer.from(proxy.authorization!.replace("Basic ", ""), "base64").toString()).toBe("leaf@mesh:s:cret");
    expect(parseHubProxy("http://[fd00::1]")).toMatchObject({ host: "fd00::1", port: 3128 });
  });

  it("refuses what is not an http:// proxy URL, naming the flag", () => {
    expect(() => parseHubProxy("proxy:3128", "--hub-proxy")).toThrow(/--hub-proxy: 'proxy:3128' must be an http:\/\/ proxy URL/);
    expect(() => parseHubProxy("https://u:pw@proxy:3128", "--hub-proxy")).toThrow(/'https:\/\/u:\*\*\*@proxy:3128'.*https:\/\/\) is not supported/);
    expect(() => parseHubProxy("http://proxy:3128/path")).toThrow(/without a path/);
    expect(() => parseHubProxy("not a url", "--hub-proxy")).toThrow(/is not a URL/);
  });
});

describe("the CONNECT exchange", () => {
  it("asks for the hub in authority form, with credentials when given", () => {
    expect(connectRequest(parseHubProxy("http://u:p@proxy:3128"), { host: "hub-1.example.net", port: 443 })).toBe(
      "CONNECT hub-1.example.net:443 HTTP/1.1\r\nHost: hub-1.example.net:443\r\nProxy-Authorization: Basic dTpw\r\nUser-Agent: leafmesh\r\n\r\n",
    );
    expect(connectRequest(parseHubProxy("http://proxy:3128"), { host: "fd00::7", port: 7422 })).toMatch(/^CONNECT \[fd00::7\]:7422 HTTP\/1\.1\r\nHost: \[fd00::7\]:7422\r\nUser/);
  });

  it("waits for the whole head, then opens with what followed it", () => {
    expect(readConnectReply(Buffer.from("HTT"))).toBe("more");
    expect(readConnectReply(Buffer.from("HTTP/1.1 200 Connection established\r\nVia: x\r\n"))).toBe("more");
    const reply = readConnectReply(Buffer.from('HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy\r\n\r\nINFO {"server_id":"x"}\r\n'));
    expect(reply).toMatchObject({ ok: true });
    expect((reply as { rest: Buffer }).rest.toString()).toBe('INFO {"server_id":"x"}\r\n');
  });

  it("tells a refusal, garbage and an endless head apart", () => {
    expect(readConnectReply(Buffer.from("HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n<html>"))).toEqual({ ok: false, problem: { kind: "refused", status: 407, reason: "Proxy Authentication Required" } });
    expect(readConnectReply(Buffer.from("SSH-2.0-OpenSSH_9.2\r\n"))).toEqual({ ok: false, problem: { kind: "not-http", sample: '"SSH-2.0-OpenSSH_9.2.."' } });
    expect(readConnectReply(Buffer.from("HTTP/1.1 abc\r\n\r\n"))).toMatchObject({ ok: false, problem: { kind: "not-http" } });
    expect(readConnectReply(Buffer.from(`HTTP/1.1 200 OK\r\nX: ${"a".repeat(maxReplyHeadBytes)}`))).toEqual({ ok: false, problem: { kind: "head-too-long" } });
  });

  it("says what a refusal means, naming the proxy and the hub", () => {
    const hub = { host: "hub-1.example.net", port: 7422 };
    const anonymous = parseHubProxy("http://proxy.factory.lan:3128");
    const named = parseHubProxy("http://leafmesh:secret@proxy.factory.lan:3128");
    expect(explainProxyProblem(anonymous, hub, { kind: "refused", status: 407, reason: "Proxy Authentication Required" })).toBe(
      "the proxy http://proxy.factory.lan:3128 asks for a user and password (407 Proxy Authentication Required) for CONNECT hub-1.example.net:7422: give them in --hub-proxy http://USER:PASSWORD@proxy.factory.lan:3128",
    );
    expect(explainProxyProblem(named, hub, { kind: "refused", status: 407, reason: "" })).toMatch(/^the proxy http:\/\/leafmesh:\*\*\*@proxy.factory.lan:3128 refused the user 'leafmesh' given in --hub-proxy \(407\)/);
    expect(explainProxyProblem(anonymous, hub, { kind: "refused", status: 403, reason: "Forbidden" })).toMatch(/refused CONNECT hub-1.example.net:7422 \(403 Forbidden\).*only to port 443.*--leaf-listen 0.0.0.0:443/);
    expect(explainProxyProblem(anonymous, hub, { kind: "refused", status: 502, reason: "Bad Gateway" })).toMatch(/could not reach the hub hub-1.example.net:7422 \(502 Bad Gateway\)/);
    expect(explainProxyProblem(anonymous, hub, { kind: "unreachable", code: "ENOTFOUND" })).toMatch(/its name 'proxy.factory.lan' does not resolve/);
  });
});
