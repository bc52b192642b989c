/**
 * The RELAY CHOICE section of `leafmesh status` and `leafmesh netcheck`: every
 * upstream with its score and the parts of it, which one the leaf (and so every
 * relayed stream) uses, the last round's verdict and the last move with its
 * reason (docs/relay-choice.md).
 */
import type { RelayChoiceStatus } from "../bus/status.ts";
import { table } from "./status.ts";

export function formatRelayChoice(choice: RelayChoiceStatus): string[] {
  const lines = [`RELAY CHOICE (relayed streams ride the leaf link; score = rtt + loss×${choice.settings.lossPenaltyMs} + channels×${choice.settings.channelPenaltyMs} + MiB/s×${choice.settings.loadPenaltyMsPerMiBps}, lower is better)`];
  lines.push(
    indent(
      table(
        ["UPSTREAM", "HUB", "RTT", "LOSS", "CHANNELS", "LOAD", "SCORE", "LEAF"],
        choice.scores.map((score) => [
          score.url,
          score.server ?? "?",
          score.rttMs !== undefined ? `${score.rttMs}ms` : "no answer",
          `${Math.round(score.loss * 100)}% of ${score.probes}`,
          score.load ? String(score.load.channels) : "-",
          score.load ? rate(score.load.bytesPerSecond) : "-",
          score.score === null ? "∞" : String(score.score),
          score.url === choice.inUse ? "in use" : "",
        ]),
      ),
    ),
  );
  if (choice.scores.length === 0) lines.push("  (no probe round yet)");
  lines.push(`  verdict: ${choice.verdict}`);
  lines.push(
    `  moves after ${choice.settings.badRounds} bad rounds of ${choice.settings.probeIntervalMs} ms, margin ${choice.settings.marginMs} ms and ${Math.round(choice.settings.marginRatio * 100)}%, hold ${choice.settings.holdMs} ms`,
  );
  if (choice.lastMove) {
    const move = choice.lastMove;
    lines.push(`  last move ${move.at}: ${move.from ?? "none"} → ${move.to}${move.movedInMs !== undefined ? ` (leaf restarted in ${move.movedInMs} ms)` : ""}${move.error ? ` FAILED: ${move.error}` : ""}`);
    lines.push(`    why: ${move.reason}`);
  }
  return lines;
}

function rate(bytesPerSecond: number): string {
  return bytesPerSecond >= 1024 * 1024 ? `${(bytesPerSecond / (1024 * 1024)).toFixed(1)}MiB/s` : `${Math.round(bytesPerSecond / 1024)}KiB/s`;
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((line) => `  ${line}`)
    .join("\n");
}
