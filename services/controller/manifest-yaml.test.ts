/**
 * The fast YAML path (js-yaml, core schema) reads manifests as `yaml` does, so
 * switching parsers changed no value; text js-yaml refuses gets `yaml`'s error
 * with its line and column.
 */
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { parseManifestDocuments } from "./manifest-yaml.ts";

const slowly = (text: string) => parseAllDocuments(text).map((document) => (document.errors.length === 0 ? { value: document.toJS() as unknown } : { error: true }));

describe("parseManifestDocuments", () => {
  it.each([
    ["several documents, lists and maps", "kind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  ports:\n    - port: 80\n      targetPort: http\n---\nkind: EndpointSlice\nendpoints: []\n"],
    ["YAML 1.1 words stay strings (yes, on, no), as in yaml's default", "a: yes\nb: on\nc: no\nd: off\ne: y\n"],
    ["dates and times stay strings", "created: 2026-12-04\nat: 2026-12-04T05:39:44Z\n"],
    ["numbers: octal, hex, floats, a leading zero", "a: 0o17\nb: 0x1f\nc: 1.5e3\nd: 017\ne: .inf\nf: -.nan\n"],
    ["null forms and empty documents", "a: ~\nb: null\nc:\n---\n---\nd: 1\n"],
    ["JSON", '{"kind": "Service", "metadata": {"name": "web", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 80}]}}'],
    ["block scalars and quotes", "a: |\n  line one\n  line two\nb: >-\n  folded\n  text\nc: 'it''s'\nd: \"tab\\there\"\n"],
    ["a kind List", "kind: List\nitems:\n  - kind: Service\n    metadata: {name: a}\n  - kind: Service\n    metadata: {name: b}\n"],
  ])("%s: the same values as yaml", (_, text) => {
    expect(parseManifestDocuments(text)).toEqual(slowly(text));
  });

  it("names the line and column of a syntax error, as yaml does", () => {
    const [document] = parseManifestDocuments("kind: Service\n  metadata: [unclosed\n");
    // yaml's own words and place for this document: a compact mapping opened on line 1, column 7.
    expect(document).toEqual({ error: { message: expect.stringMatching(/^Nested mappings are not allowed in compact mappings at line 1, column 7/), line: 1, column: 7 } });
  });

  it("reads merge keys as yaml does", () => {
    const text = "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n";
    expect(parseManifestDocuments(text)).toEqual(slowly(text));
  });

  it("refuses a document whose aliases expand without end (billion laughs), beside a file js-yaml refuses: no throw", () => {
    const levels = "abcdefghi".split("");
    const bomb = levels.map((name, index) => `  ${name}: &${name} [${Array.from({ length: 10 }, () => (index === 0 ? '"x"' : `*${levels[index - 1]}`)).join(",")}]`).join("\n");
    // A second document naming the first one's anchor: js-yaml refuses the file, so yaml reads it, and expands the first.
    const text = `kind: ConfigMap\ndata:\n${bomb}\n---\nkind: Service\nmetadata: {labels: *i}\n`;
    const documents = parseManifestDocuments(text);
    expect(documents[0]).toEqual({ error: { message: expect.stringMatching(/Excessive alias count/), line: 1, column: 1 } });
    expect(documents).toHaveLength(2);
    expect("error" in documents[1]).toBe(true);
  });
});
