/**
 * Faults on a live mesh during a transfer edge-c → edge-a (a client reads through edge-a's SOCKS proxy, by
 * node name, from a source behind edge-c that never ends, so any end it reads is a cut): a diagnostic, not a
 * test (test/relay-stall.test.ts, test/relay-kill.test.ts, test/crash-mid-stream.test.ts and
 * services/tunnel/direct-blackhole.test.ts hold the rows that matter). Real processes on loopback: a hub,
 * edge-a, edge-c. What it prints: how the client's stream ended and when, how soon a new stream worked,
 * the agents' warnings. Run on 2026-12-06 (each row once):
 *
 * | ways | fault | the client's stream | a new stream |
 * |---|---|---|---|
 * | relay | edge-c SIGSTOP 30 s | ECONNRESET ~8.5 s in (idle timeout) | 0.1 s after SIGCONT |
 * | relay | edge-a SIGSTOP 30 s | ECONNRESET at SIGCONT | 0.3 s |
 * | relay | hub's nats-server SIGSTOP 30 s | ECONNRESET ~8.7 s in | 4 s after SIGCONT |
 * | relay | edge-c's nats-server SIGSTOP 30 s | ECONNRESET ~8 s in | 0.5 s after SIGCONT |
 * | relay | edge-c's / edge-a's nats-server -9 | ECONNRESET in ~2.5 s (sequence gap) | at once; the server restarted |
 * | relay | hub link DROP / ICMP unreachable 5 s | goes on whole (TCP retransmits) | at once |
 * | relay | hub link REJECT tcp-reset 5 s | ECONNRESET | at once |
 * | relay | hub link DROP 60 s | ECONNRESET ~8 s in | 2 s after the cut |
 * | direct (psk) | edge-c SIGSTOP 30 s | ECONNRESET ~18 s in (libp2p pings) | at once |
 * | direct (psk) | edge-a SIGSTOP 30 s | ECONNRESET at SIGCONT | at once |
 * | direct (psk) | edge-c's nats-server -9 or SIGSTOP | goes on whole (not on the path) | at once |
 * | direct (psk) | edge-c's ports DROP 5 s | goes on whole | at once |
 * | direct (psk) | edge-c's ports REJECT tcp-reset 5 s | ECONNRESET | at once |
 * | direct,relay (psk) | edge-c's ports DROP 60 s | ECONNRESET ~17 s in | during the cut (edge-c dials edge-a) |
 * | direct (keys) | edge-c's TLS port DROP 50 s, download or upload | hung with no error for the whole cut (fixed since: TCP keepalive, reset ~15 s in) | at once |
 * | direct (keys) | edge-a SIGSTOP 30 s | goes on whole after SIGCONT (the kernel keeps TCP up; keepalive too) | at once |
 * | direct, relay (keys) | keys issue --rotate of edge-c (it starts again in place) | ECONNRESET | 3–4 s |
 * | direct (keys) | keys revoke edge-c | ECONNRESET | refused (revoked), as meant |
 *
 * (The REJECT rule must let RSTs through, `! --tcp-flags RST RST`: on loopback the RST it sends crosses the
 * same INPUT chain, and a rule that matches it drops it.) UPLOAD=1: the client uploads to a silent target
 * behind edge-c instead, and the target's ending is read. DURING=1: with an iptables fault, new streams are
 * tried during the cut.
 *
 *   node lab/live-ops-probe.ts <relay|direct|both|krelay|kdirect|kboth> <fault> [seconds]
 *   faults: stop-c stop-a stop-hub stop-natsc kill-natsc kill-natsa kill-hub gone-c rotate-c revoke-c
 *           drop reset icmp (the hub's leaf port) ddrop dreset dicmp (edge-c's listening ports)
 */
import { execFileSync } from "node:child_process";
import type { Socket } from "node:net";
import { startTarget, watchEnding } from "../test/support/fault-targets.ts";
import { writePsk } from "../test/support/manifests.ts";
import { freePort } from "../test/support/ports.ts";
import { join } from "node:path";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { runCliOk, startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { echoesThroughSocks, readAtLeast, socksConnect } from "../test/support/socks-client.ts";
import { awaitEnding, elapsedMs, log, natsPid, sayWarnings, sleep, untilWorks } from "./live-ops-report.ts";

const [ways, fault] = process.argv.slice(2);
function listenPorts(pid: number): number[] {
  const out = execFileSync("ss", ["-ltnpH"], { encoding: "utf8" });
  return out.split("\n").filter((l) => l.includes(`pid=${pid},`)).map((l) => Number(l.split(/\s+/)[3].split(":").pop()));
}
function ipt(args: string[]) { execFileSync("iptables", args); }

const source = await startTarget("source", { bytes: 64 * 1024 * 1024 * 1024 });
const echo = await startTarget("echo");
const drain = await startTarget("silent");
const upload = process.env.UPLOAD === "1";
try {
  const secured = ways.startsWith("k");
  const keys = secured ? join(tempDir(), "keys") : undefined;
  if (keys) {
    await initKeys({ dir: keys });
    for (const node of ["edge-a", "edge-c"]) await issueNode({ dir: keys, node });
  }
  const psk = writePsk(tempDir());
  const hub = await startHubProcess({ name: "hub-1", keys });
  const socksPort = await freePort();
  const plain = ways.replace(/^k/, "");
  const tunnelArgs = [...(secured ? [] : ["--psk", psk]), "--mdns", "off", "--tunnel-ways", plain === "relay" ? "relay" : plain === "both" ? "direct,relay" : "direct"];
  const edgeA = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], keys, extraArgs: [...tunnelArgs, "--socks", `127.0.0.1:${socksPort}`] });
  const edgeC = await startAgentProcess({ node: "edge-c", hubs: [hub.leafUrl], keys, extraArgs: tunnelArgs });
  await echoesThroughSocks(socksPort, "edge-c", echo.port, 30_000);
  log("echo works");
  const busConnection = await edgeA.connection();
  busConnection.subscribe("mesh.*.tunnel.>", { callback: (_e, m) => log("BUS", m.subject, m.string().slice(0, 250)) });
  await busConnection.flush();
  const client: Socket = await socksConnect(socksPort, "edge-c", upload ? drain.port : source.port);
  client.on("error", () => undefined);
  let writing: NodeJS.Timeout | undefined;
  let ending: Promise<{ how: string; bytes: number }>;
  if (upload) {
    ending = drain.nextEnding();
    const chunk = Buffer.alloc(64 * 1024, 7);
    for (let written = 0; written < 4 * 1024 * 1024; written += chunk.length) if (!client.write(chunk)) await new Promise((r) => client.once("drain", r));
    writing = setInterval(() => { for (let i = 0; i < 16 && client.writable && client.writableLength < 1 << 20; i++) client.write(chunk); }, 5);
    log("4 MiB written; fault", fault);
  } else {
    await readAtLeast(client, 4 * 1024 * 1024, 15_000);
    log("4 MiB read; fault", fault);
    ending = watchEnding(client);
  }
  let ended: { how: string; bytes: number; at: number } | undefined;
  void ending.then((e) => { ended = { ...e, at: elapsedMs() }; clearInterval(writing); log(upload ? "target's stream:" : "client stream:", e.how, (e.bytes / 1048576).toFixed(1), "MiB more"); });
  const leafPort = Number(new URL(hub.leafUrl).port);
  const rule = (action: string[]) => [["-p", "tcp", "--dport", String(leafPort), ...action], ["-p", "tcp", "--sport", String(leafPort), ...action]];
  let undo: () => void = () => undefined;
  const hold = Number(process.argv[4] ?? 30) * 1000;
  switch (fault) {
    case "stop-c": process.kill(edgeC.child.pid!, "SIGSTOP"); await sleep(hold); process.kill(edgeC.child.pid!, "SIGCONT"); break;
    case "stop-a": process.kill(edgeA.child.pid!, "SIGSTOP"); await sleep(hold); process.kill(edgeA.child.pid!, "SIGCONT"); break;
    case "stop-hub": { const p = natsPid(hub); process.kill(p, "SIGSTOP"); await sleep(hold); process.kill(p, "SIGCONT"); break; }
    case "stop-natsc": { const p = natsPid(edgeC); process.kill(p, "SIGSTOP"); await sleep(hold); process.kill(p, "SIGCONT"); break; }
    case "kill-natsc": process.kill(natsPid(edgeC), "SIGKILL"); break;
    case "kill-natsa": process.kill(natsPid(edgeA), "SIGKILL"); break;
    case "kill-hub": await hub.kill(); break;
    case "rotate-c": log(await runCliOk("keys", "issue", "--dir", keys!, "--node", "edge-c", "--rotate", "--hub", hub.clientUrl)); break;
    case "revoke-c": log(await runCliOk("keys", "revoke", "--dir", keys!, "--node", "edge-c", "--hub", hub.clientUrl)); break;
    case "gone-c": {
      await edgeC.kill();
      for (let i = 0; i < 12; i++) {
        const began = Date.now();
        let outcome = "";
        try { await echoesThroughSocks(socksPort, "edge-c", echo.port, 1); outcome = "works?!"; } catch (e) { outcome = String((e as Error).cause ?? (e as Error).message); }
        const view = await edgeA.view();
        log(`attempt ${i}: ${Date.now() - began} ms: ${outcome}; path`, JSON.stringify((view.status.actors.find((a) => a.name === "tunnel")?.detail as { paths?: unknown })?.paths));
        await sleep(5_000);
      }
      break;
    }
    case "ddrop": case "dreset": case "dicmp":
    case "drop": case "reset": case "icmp": {
      const ports = fault.startsWith("d") ? listenPorts(edgeC.child.pid!) : [leafPort];
      log("ports", ports, "edge-a's tcp:", execFileSync("ss", ["-tnpH"], { encoding: "utf8" }).split("\n").filter((l) => l.includes(`pid=${edgeA.child.pid},`)).map((l) => l.split(/\s+/).slice(1, 5).join(" ")));
      const rule = (action: string[]) => ports.flatMap((port) => [["-p", "tcp", "--dport", String(port), ...action], ["-p", "tcp", "--sport", String(port), ...action]]);
      const kind = fault.replace(/^d(?=drop|reset|icmp)/, "");
      const action = kind === "drop" ? ["-j", "DROP"] : kind === "reset" ? ["!", "--tcp-flags", "RST", "RST", "-j", "REJECT", "--reject-with", "tcp-reset"] : ["-j", "REJECT", "--reject-with", "icmp-port-unreachable"];
      for (const r of rule(action)) ipt(["-I", "INPUT", ...r]);
      undo = () => { for (const r of rule(action)) try { ipt(["-D", "INPUT", ...r]); } catch { /* gone */ } };
      if (process.env.DURING === "1") {
        const until = Date.now() + hold;
        while (Date.now() < until) {
          const began = Date.now();
          const outcome = await echoesThroughSocks(socksPort, "edge-c", echo.port, 1).then(() => "works", (e: Error) => e.message);
          const view = await edgeA.view().catch(() => undefined);
          log(`during the cut: a new stream ${outcome} in ${Date.now() - began} ms; path`, JSON.stringify((view?.status.actors.find((a) => a.name === "tunnel")?.detail as { paths?: unknown })?.paths));
          await sleep(Math.max(0, Math.min(3_000, until - Date.now())));
        }
      } else await sleep(hold);
      undo(); undo = () => undefined; break;
    }
  }
  log("fault over");
  undo();
  // gone-c measured its attempts above; it has no recovery to wait for.
  const recovery = fault === "gone-c" ? 0 : 60;
  if (recovery > 0) await awaitEnding(() => ended !== undefined, ": continues (bytes flowing?)");
  else if (!ended) log("client stream still open after the fault: continues (bytes flowing?)");
  client.destroy();
  await untilWorks("new stream", () => echoesThroughSocks(socksPort, "edge-c", echo.port, 5_000), { tries: recovery, sayEvery: 5 });
  await sleep(3_000);
  for (const agent of [edgeA, edgeC].filter((agent) => agent.child.exitCode === null && agent.child.signalCode === null)) {
    const metrics = execFileSync("curl", ["-s", "-m", "2", `${agent.metricsUrl}/metrics`], { encoding: "utf8" }).split("\n").filter((l) => /relay_channels|streams_open|open_streams|connections_open|_open\b|active/.test(l) && !l.startsWith("#"));
    log(agent.name, "gauges:", metrics.join(" | ").slice(0, 900));
  }
  sayWarnings([edgeA, edgeC, hub], { last: 8, width: 400 });
} finally {
  await stopAllProcesses();
  await source.close();
  await echo.close();
  await drain.close();
}
