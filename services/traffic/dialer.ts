/**
 * The seam to the tunnel: how traffic reaches an endpoint on another node. The
 * tunnel actor implements `RemoteDialer`; the agent hands it to the traffic actor
 * (the one in-process interface between actors, see DESIGN.md). Without one,
 * endpoints on other nodes are dialled directly by IP.
 */
import type { Duplex } from "node:stream";

export interface RemoteTarget {
  host: string;
  port: number;
  protocol: "TCP" | "UDP";
}

export interface RemoteDialer {
  /**
   * A byte stream to `target` as seen from `node`. For TCP the stream is the
   * connection (end() half-closes); it rejects when the node cannot be reached.
   */
  openStream(node: string, target: RemoteTarget): Promise<Duplex>;
}
