/**
 * Deployment files: every Kubernetes manifest under deploy/ checked against the
 * API's own schema (the models of @kubernetes/client-node: no unknown field, the
 * right type everywhere), compose.yaml parsed and checked, and every leafmesh
 * flag these files pass accepted by the CLI they run.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import * as k8s from "@kubernetes/client-node";
import { parse, parseAllDocuments } from "yaml";
import { beforeAll, describe, expect, it } from "vitest";
import type { Command } from "../cli/command.ts";
import { loadCommands } from "../cli/main.ts";
import { socksClientsFor } from "../cli/agent.ts";
import { parseHostPort } from "../nats/render.ts";
import { certificateHosts } from "../trust/hub-certificate.ts";
import { runCli } from "./support/processes.ts";

let commands: Command[] = [];
beforeAll(async () => {
  commands = await loadCommands();
});

const root = resolve(import.meta.dirname, "..");
type Attribute = { name: string; baseName: string; type: string };
type Model = { getAttributeTypeMap(): Attribute[] };

/** Walks `value` against the client-node model `type`; returns "path: problem" strings. */
export function checkAgainstModel(value: unknown, type: string, path: string): string[] {
  if (value === null || value === undefined) return [];
  if (type === "string") return typeof value === "string" ? [] : [`${path}: expected a string, got ${JSON.stringify(value)}`];
  if (type === "number") return typeof value === "number" ? [] : [`${path}: expected a number, got ${JSON.stringify(value)}`];
  if (type === "boolean") return typeof value === "boolean" ? [] : [`${path}: expected a boolean`];
  if (type === "Date") return typeof value === "string" ? [] : [`${path}: expected a time`];
  if (type === "IntOrString") return typeof value === "string" || typeof value === "number" ? [] : [`${path}: expected a number or string`];
  if (type === "any" || type === "object") return [];
  const array = /^Array<(.+)>$/.exec(type);
  if (array) return Array.isArray(value) ? value.flatMap((item, index) => checkAgainstModel(item, array[1], `${path}[${index}]`)) : [`${path}: expected a list`];
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) return typeof value === "object" && !Array.isArray(value) ? Object.entries(value as object).flatMap(([key, item]) => checkAgainstModel(item, map[1], `${path}.${key}`)) : [`${path}: expected a mapping`];
  const model = (k8s as unknown as Record<string, Model | undefined>)[type];
  if (!model?.getAttributeTypeMap) return [`${path}: no schema for type ${type}`];
  if (typeof value !== "object" || Array.isArray(value)) return [`${path}: expected a ${type} mapping`];
  const attributes = new Map(model.getAttributeTypeMap().map((attribute) => [attribute.baseName, attribute]));
  return Object.entries(value as Record<string, unknown>).flatMap(([key, item]) => {
    const attribute = attributes.get(key);
    return attribute ? checkAgainstModel(item, attribute.type, `${path}.${key}`) : [`${path}.${key}: unknown field for ${type}`];
  });
}

function modelName(apiVersion: string, kind: string): string {
  const version = apiVersion.split("/").pop()!;
  return `${version.charAt(0).toUpperCase()}${version.slice(1)}${kind}`;
}

const manifestDir = join(root, "deploy/kubernetes");
const documents = readdirSync(manifestDir)
  .filter((file) => file.endsWith(".yaml"))
  .flatMap((file) => parseAllDocuments(readFileSync(join(manifestDir, file), "utf8")).map((document, index) => ({ file, index, object: document.toJS() as { apiVersion: string; kind: string; metadata: { name: string } } })));

/** `leafmesh` flags used in args/command lists, checked against the command's own option table. */
function checkLeafmeshArgs(args: string[], where: string): string[] {
  const command = commands.find((candidate) => candidate.name === args[0]);
  if (!command) return [`${where}: '${args[0]}' is not a leafmesh command`];
  const help = command.help();
  return args
    .slice(1)
    .filter((arg) => arg.startsWith("--"))
    .map((arg) => arg.split("=")[0])
    .filter((flag) => !new RegExp(`\\s${flag}[\\s,]`).test(help))
    .map((flag) => `${where}: 'leafmesh ${args[0]}' has no flag ${flag}`);
}

describe("deployment files", () => {
  it("has the objects a cluster needs", () => {
    expect(documents.map((document) => document.object.kind).sort()).toEqual(
      ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "Namespace", "Service", "Service", "Service", "ServiceAccount", "StatefulSet", "StatefulSet"].sort(),
    );
  });

  it.each(documents.map((document) => [`${document.file}#${document.index} ${document.object.kind} ${document.object.metadata?.name}`, document.object] as const))(
    "%s matches the Kubernetes schema",
    (_name, object) => {
      expect(object.metadata?.name).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
      expect(checkAgainstModel(object, modelName(object.apiVersion, object.kind), object.kind)).toEqual([]);
    },
  );

  it("catches what it should: an unknown field and a wrong type", () => {
    expect(checkAgainstModel({ spec: { replicas: "3", replics: 3 } }, "V1StatefulSet", "StatefulSet")).toEqual([
      'StatefulSet.spec.replicas: expected a number, got "3"',
      "StatefulSet.spec.replics: unknown field for V1StatefulSetSpec",
    ]);
  });

  it("passes only flags leafmesh accepts, in the manifests and in compose.yaml", () => {
    const problems: string[] = [];
    for (const { file, object } of documents) {
      const containers = (object as { spec?: { template?: { spec?: { containers?: { args?: string[] }[] } } } }).spec?.template?.spec?.containers ?? [];
      for (const container of containers) if (container.args) problems.push(...checkLeafmeshArgs(container.args, file));
    }
    const compose = parse(readFileSync(join(root, "compose.yaml"), "utf8"), { merge: true }) as { services: Record<string, { command?: string[]; image?: string }> };
    expect(Object.keys(compose.services).sort()).toEqual(["agent-1", "agent-2", "hub-1", "hub-2", "hub-3"]);
    for (const [name, service] of Object.entries(compose.services)) {
      expect(service.image, name).toBe("leafmesh:0.1.0");
      problems.push(...checkLeafmeshArgs(service.command ?? [], `compose.yaml ${name}`));
    }
    expect(problems).toEqual([]);
  });

  it("starts the SOCKS proxy as configured: an address beyond loopback names its clients", () => {
    // The agent refuses such a --socks at start (cli/agent.ts); a DaemonSet that did would crash-loop on every node.
    const agents = documents.flatMap(({ file, object }) =>
      ((object as { spec?: { template?: { spec?: { containers?: { args?: string[] }[] } } } }).spec?.template?.spec?.containers ?? []).filter((container) => container.args?.[0] === "agent").map((container) => ({ file, args: container.args! })),
    );
    expect(agents.length).toBeGreaterThan(0);
    for (const { file, args } of agents) {
      const value = (flag: string) => args.find((arg) => arg.startsWith(`${flag}=`))?.slice(flag.length + 1);
      const socks = value("--socks");
      if (socks === undefined || socks === "off") continue;
      expect(() => socksClientsFor(parseHostPort(socks), value("--socks-clients")?.split(",")), file).not.toThrow();
    }
  });

  it("ships sample manifests (for compose) that the catalog accepts", async () => {
    const { normalizeObject } = await import("../services/controller/normalize.ts");
    for (const document of parseAllDocuments(readFileSync(join(root, "deploy/manifests/sample.yaml"), "utf8"))) {
      expect(normalizeObject(document.toJS()).status).toBe("ok");
    }
  });

  it("follows its own keys steps: the hubs mount the Secrets that 20-hub.yaml's commands make, the enrolling hub the whole directory, and every name hubs and agents dial is in the hubs' certificate", async () => {
    const text = readFileSync(join(manifestDir, "20-hub.yaml"), "utf8");
    const steps = [...text.matchAll(/^#\s+leafmesh (keys [^|\n]*?)\s*(\| kubectl apply -f -)?$/gm)].map((match) => match[1].split(/\s+/));
    expect(steps.map((step) => step[1])).toEqual(["init", "k8s-secret", "k8s-secret"]);
    const keys = join(mkdtempSync(join(tmpdir(), "leafmesh-deploy-keys-")), "keys");
    const secrets = new Map<string, Record<string, string>>();
    try {
      for (const step of steps) {
        const result = await runCli(step.map((arg, index) => (step[index - 1] === "--dir" ? keys : arg)));
        expect(result.code, `leafmesh ${step.join(" ")}: ${result.stderr}`).toBe(0);
        if (step[1] === "k8s-secret") {
          const secret = parse(result.stdout) as { metadata: { name: string; namespace: string }; data: Record<string, string> };
          expect(secret.metadata.namespace).toBe("leafmesh");
          secrets.set(secret.metadata.name, secret.data);
        }
      }
      const hosts = certificateHosts(readFileSync(join(keys, "hub", "hub.crt")));
      type Pods = { metadata: { name: string }; spec: { serviceName: string; replicas: number; template: { spec: { containers: { args: string[] }[]; volumes: { name: string; secret?: { secretName: string } }[] } } } };
      const sets = documents.filter(({ object }) => object.kind === "StatefulSet").map(({ object }) => object as unknown as Pods);
      const pods = sets.flatMap((set) => Array.from({ length: set.spec.replicas }, (_, index) => `${set.metadata.name}-${index}.${set.spec.serviceName}`));
      for (const set of sets) {
        const args = set.spec.template.spec.containers[0].args;
        const secret = secrets.get(set.spec.template.spec.volumes.find((volume) => volume.name === "keys")!.secret!.secretName);
        expect(secret, `${set.metadata.name}: its keys Secret is one the steps make`).toBeDefined();
        // The enrolling hub issues nodes: it needs the CA key and the seeds; the others must not hold them.
        expect("ca__ca.key" in secret!, set.metadata.name).toBe(args.includes("--enrol"));
        const routes = args.find((arg) => arg.startsWith("--routes="))!.slice("--routes=".length).split(",").map((url) => new URL(url).hostname);
        expect(routes.sort()).toEqual([...pods].sort());
        for (const host of routes) expect(hosts, `${host}: a hub refuses --routes its certificate does not name`).toContain(host);
      }
      expect(sets.filter((set) => set.spec.template.spec.containers[0].args.includes("--enrol")).map((set) => set.spec.replicas)).toEqual([1]);
      // What agents dial: the leaf address (--hub) and the enrolling hub (the token's --url).
      const agentFile = readFileSync(join(manifestDir, "30-agent.yaml"), "utf8");
      const agentHub = /--hub=(\S+)/.exec(agentFile)![1];
      const tokenUrl = /keys token .*--url (\S+)/.exec(agentFile)![1];
      for (const url of [agentHub, tokenUrl]) expect(hosts, url).toContain(new URL(url).hostname);
    } finally {
      rmSync(dirname(keys), { recursive: true, force: true });
    }
  }, 60_000);
});
