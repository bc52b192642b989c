/** Relay choice's settings and their defaults (relay-choice.ts): read by the agent's flags without loading relay choice. */
import { defaultChoiceSettings, type ChoiceSettings } from "../nats/relay-score.ts";

export interface RelayChoiceSettings extends ChoiceSettings {
  /** @default 2_000 — a probe round every 2 s: with 3 bad rounds, a degraded hub is left within ~6 s. */
  probeIntervalMs: number;
  /** @default 1_000 — a probe unanswered for 1 s counts as lost (a leaf handshake that slow is a bad path). */
  probeTimeoutMs: number;
  /** @default 10 — rounds in the sliding window RTT and loss are taken over (20 s at the default interval). */
  windowRounds: number;
  /** @default 15_000 — a hub's published load older than this is ignored (hubs publish every 5 s). */
  loadMaxAgeMs: number;
}

export const defaultRelayChoiceSettings: RelayChoiceSettings = {
  ...defaultChoiceSettings,
  probeIntervalMs: 2_000,
  probeTimeoutMs: 1_000,
  windowRounds: 10,
  loadMaxAgeMs: 15_000,
};
