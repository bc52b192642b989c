import { describe, expect, it } from "vitest";
import { cloudConnections, decodeProcAddress, parseProcTcp } from "./cloud-connections.ts";

// Lines as the kernel writes them (columns after `st` trimmed: they are not read).
const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:10BE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0A4112C6:9D58 014012C6:1CFE 01 00000000:00000000 02:000A5E2D 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0A4112C6:B2F6 014012C6:0D96 06 00000000:00000000 03:00000F2F 00000000     0        0 0 3 0000000000000000
   3: 0A4112C6:A0A0 024012C6:1CFE 02 00000000:00000000 01:00000077 00000002     0        0 3 1 0000000000000000 200 0 0 10 -1
`;
const tcp6 = `  sl  local_address                         remote_address                        st
   0: 0000000000000000FFFF00000A4112C6:C350 0000000000000000FFFF0000014012C6:0D97 01 00000000:00000000
   1: 000080FE00000000FF005450E5C3A2FE:1F90 000080FE00000000FF005450E5C3A2FF:01BB 01 00000000:00000000
`;

describe("the node's connections to the cloud, from /proc/net/tcp", () => {
  it("decodes the kernel's addresses", () => {
    expect(decodeProcAddress("0100007F:10BE")).toBe("127.0.0.1:4286");
    expect(decodeProcAddress("014012C6:1CFE")).toBe("198.18.64.1:7422");
    expect(decodeProcAddress("0000000000000000FFFF0000014012C6:0D97")).toBe("198.18.64.1:3479");
    expect(decodeProcAddress("000080FE00000000FF005450E5C3A2FE:1F90")).toBe("[fe80::5054:ff:fea2:c3e5]:8080");
    expect(decodeProcAddress("00000000000000000000000001000000:4449")).toBe("[::1]:17481");
    expect(parseProcTcp(tcp).map((entry) => entry.state)).toEqual(["LISTEN", "ESTABLISHED", "TIME_WAIT", "SYN_SENT"]);
  });

  it("counts live connections to the upstreams' hosts only (no listeners, no TIME_WAIT, no other host)", () => {
    expect(cloudConnections([tcp, tcp6], ["198.18.64.1"])).toEqual([
      { local: "198.18.65.10:40280", remote: "198.18.64.1:7422", state: "ESTABLISHED" },
      { local: "198.18.65.10:50000", remote: "198.18.64.1:3479", state: "ESTABLISHED" },
    ]);
    expect(cloudConnections([tcp], ["198.18.64.1", "198.18.64.2"])).toHaveLength(2);
  });

  it("finds an upstream given by an IPv6 address however it is spelt", () => {
    // A leaf link to [::1]:17422 and to 2001:db8::a:7422, as an agent started with --hub nats://[::1]:17422 holds it.
    const links = `  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:440E 01 00000000:00000000
   1: B80D0120000000000000000001000000:9C41 B80D012000000000000000000A000000:1CFE 01 00000000:00000000
`;
    expect(cloudConnections([links], ["::1"], [17422]).map((entry) => entry.remote)).toEqual(["[::1]:17422"]);
    expect(cloudConnections([links], ["[2001:DB8:0:0::A]"]).map((entry) => entry.remote)).toEqual(["[2001:db8::a]:7422"]);
  });

  it("takes only the upstreams' ports from an upstream on this machine: other loopback connections are not the cloud's", () => {
    // A one-machine mesh: the leaf link to 127.0.0.1:17422, and status's own connection to the agent's 127.0.0.1:4222.
    const loopback = `  sl  local_address rem_address   st
   0: 0100007F:9C40 0100007F:440E 01 00000000:00000000
   1: 0100007F:9C41 0100007F:107E 01 00000000:00000000
`;
    expect(cloudConnections([loopback], ["127.0.0.1"], [17422]).map((entry) => entry.remote)).toEqual(["127.0.0.1:17422"]);
    expect(cloudConnections([loopback], ["127.0.0.1"])).toEqual([]);
  });
});
