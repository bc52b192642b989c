/**
 * `leafmesh keys k8s-secret`: the keys directory, or the hubs' copy of it, as a
 * Kubernetes Secret that a hub mounts as its --keys (trust/flat-keys.ts).
 *
 *   leafmesh keys k8s-secret --dir keys | kubectl apply -f -
 *   leafmesh keys k8s-secret --dir keys --part all --name leafmesh-enrol-keys --out enrol-secret.yaml
 */
import { defineCommand } from "./command.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { keysSecretManifest, type KeysPart } from "../trust/flat-keys.ts";
import { writeSecretFile } from "../trust/secret-files.ts";

export const k8sSecretCommand = defineCommand({
  name: "keys k8s-secret",
  summary: "the hubs' copy of the keys (or the whole directory) as a Kubernetes Secret that a hub mounts as its --keys",
  description: `
Prints a Secret manifest (or writes it 0600 to --out) holding the files of
DIR: with --part hubs (the default) what a hub needs and nothing more
(state.json, operator.jwt, accounts/*.jwt, hub/), with --part all the whole
directory, seeds and CA key included, for the one hub that enrols nodes.
A Secret holds no directories, so each file is a key that spells its path
with '__' for '/'. A hub started with such a mount as --keys unpacks it into
DATA/keys and runs from there: a hub with --enrol only at its first start
(its keys directory is its own from then on); any other at each start and
whenever the Secret changes, so that 'keys hub-cert' followed by this command
and 'kubectl apply' restarts the hubs with the new certificate, one at a time.
Kubernetes refuses a Secret over 1 MiB: the command says so instead.`,
  options: {
    dir: { type: "string", value: "DIR", required: true, description: "the mesh's keys directory (leafmesh keys init)" },
    part: { type: "string", value: "PART", default: "hubs", description: "hubs: what a hub that does not enrol needs; all: the whole directory (seeds, CA key), for the enrolling hub" },
    name: { type: "string", value: "NAME", default: "leafmesh-hub-keys", description: "the Secret's name" },
    namespace: { type: "string", value: "NS", default: "leafmesh", description: "the Secret's namespace" },
    out: { type: "string", value: "FILE", description: "write the manifest to FILE (0600) instead of printing it" },
  },
  async run(values, _positionals, io) {
    if (values.part !== "hubs" && values.part !== "all") throw new LeafmeshError("CONFIG_INVALID", `--part: '${values.part}' is neither hubs nor all`);
    const result = keysSecretManifest({ dir: values.dir, part: values.part as KeysPart, name: values.name!, namespace: values.namespace! });
    const summary = `Secret ${values.namespace}/${values.name}: ${result.files} files of ${values.dir} (${values.part}), ${result.bytes} bytes`;
    if (values.out) {
      writeSecretFile(values.out, result.yaml);
      io.stdout.write(`${summary}; written to ${values.out}\n`);
    } else {
      io.stderr.write(`${summary}\n`);
      io.stdout.write(result.yaml);
    }
    return 0;
  },
});
