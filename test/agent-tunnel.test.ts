/**
 * Cross-node service traffic through real agent processes on loopback: a
 * connection to edge-a's proxy for a Service whose only endpoint runs on edge-b
 * goes through the tunnel to edge-b's agent, which connects to the endpoint
 * there. The path appears on the bus.
 */
import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { sampleService, writeManifest, writePsk } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { proxyListener, startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "./support/processes.ts";

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) server.close();
  await stopAllProcesses();
});


describe("service traffic across nodes through the tunnel", () => {
  it("reaches a backend on another node through that node's agent, and reports the path", async () => {
    const backendPort = await freePort();
    const backend = createServer((_request, response) => response.end("hello from edge-b's backend\n"));
    await new Promise<void>((resolve) => backend.listen(backendPort, "127.0.0.1", resolve));
    servers.push(backend);

    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10", endpoints: [{ ip: "127.0.0.1", node: "edge-b" }], backendPort }));
    const psk = writePsk(tempDir());
    const hub = await startHubProcess({ name: "hub-1", manifests });
    const tunnelArgs = ["--psk", psk, "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "off"];
    const socksPort = await freePort();
    const [edgeA, edgeB] = await Promise.all(
      ["edge-a", "edge-b"].map((node) => startAgentProcess({ node, hubs: [hub.leafUrl], extraArgs: [...tunnelArgs, ...(node === "edge-a" ? ["--socks", `127.0.0.1:${socksPort}`] : [])] })),
    );

    const paths: { peer: string; kind: string }[] = [];
    const connection = await edgeA.connection();
    connection.subscribe("mesh.edge-a.tunnel.path", { callback: (_error, message) => void paths.push(message.json()) });
    await connection.flush();

    const listener = await proxyListener(edgeA, "demo/web:http/TCP");
    const body = await eventually(async () => (await fetch(`http://${listener.host}:${listener.port}/`)).text(), 30_000, "a response through the tunnel");
    expect(body).toBe("hello from edge-b's backend\n");
    await eventually(() => paths.some((path) => path.peer === "edge-b" && path.kind === "direct"), 15_000, "a direct path to edge-b on the bus");
    const tunnel = (await edgeA.view()).status.actors.find((actor) => actor.name === "tunnel");
    expect((tunnel?.detail?.paths as Record<string, string>)["edge-b"]).toBe("direct");
    expect(edgeB.output()).not.toMatch(/"level":50/);

    // The SOCKS5 proxy on edge-a, with real curl: a Service by name, and a node by name (its own loopback, through the tunnel).
    // Asynchronous curl: the backend runs in this process and must keep answering meanwhile.
    const curlViaSocks = (url: string) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        execFile("curl", ["-sS", "--max-time", "10", "--socks5-hostname", `127.0.0.1:${socksPort}`, url], (error, stdout, stderr) =>
          resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        );
      });
    const viaSocks = async (url: string) => {
      const result = await curlViaSocks(url);
      if (result.code !== 0) throw new Error(`curl ${url} via SOCKS: exit ${result.code}: ${result.stderr}`);
      return result.stdout;
    };
    expect(await viaSocks("http://web.demo.svc.cluster.local/")).toBe("hello from edge-b's backend\n");
    expect(await viaSocks(`http://edge-b:${backendPort}/`)).toBe("hello from edge-b's backend\n");
    const refused = await curlViaSocks("http://nope.demo.svc.cluster.local/");
    expect(refused.code).toBe(97); // curl: "proxy handshake error" — the proxy refused the unknown Service
  });
});
