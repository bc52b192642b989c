/**
 * Lets V8 weigh the bytes of I/O buffers against the whole heap, in processes that
 * move stream bytes (agents: tunnel streams, cluster-IP proxying).
 *
 * Why: every socket read, TLS record and NATS message hands JavaScript a fresh Buffer
 * whose bytes live outside the JS heap. By default V8 starts a full mark of the old
 * generation whenever such external memory has grown by a fixed 64 MiB since the last
 * one, however small the heap: an agent relaying 100 MB/s ran a mark-compact every
 * ~50 ms ("GC in old space requested", `--trace-gc`), 15–20 per 128 MiB. With external
 * memory accounted in V8's global limit, the limit scales with the heap and its growth
 * rate instead (measured in bench/tunnel, relayed: 15–20 → 0–10 full GCs per 128 MiB
 * at the receiving agent, 13–14 → 6–8 ms of agent CPU per MiB; direct 3.5 → 2–3).
 * The price: an agent's peak RSS at full throughput went ~240 → ~290 MB, flat over 3 GiB.
 *
 * Limits are computed at each GC, so setting the flag once the process runs takes
 * effect from the next collection on.
 */
import { setFlagsFromString } from "node:v8";

export function accountStreamBuffersInHeapLimits(): void {
  setFlagsFromString("--external-memory-accounted-in-global-limit");
}
