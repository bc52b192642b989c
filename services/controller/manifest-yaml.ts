/**
 * Manifest text (YAML or JSON, several documents) to plain values, document by
 * document, or each document's first error with its line and column.
 *
 * The common case, text that parses, goes through js-yaml with the YAML 1.2
 * core schema (what `yaml` reads by default: `yes` and dates stay strings, no
 * merge keys): ~20× faster than `yaml`'s document model, which took ~8 s of a
 * hub's start for 10,000 services in 20 files on 2 cores (0.4 ms per object;
 * bench/results/profiles, issue 17). Text that js-yaml refuses is read again by
 * `yaml`, whose errors name the document, line and column, so a rejection
 * reads as it always did; where the two disagree, `yaml` decides.
 *
 * ```ts
 * for (const document of parseManifestDocuments(text)) if ("error" in document) refuse(document.error);
 * ```
 */
import jsYaml from "js-yaml";
import { parseAllDocuments } from "yaml";

export type ManifestDocument = { value: unknown } | { error: { message: string; line?: number; column?: number } };

export function parseManifestDocuments(text: string): ManifestDocument[] {
  try {
    return jsYaml.loadAll(text, undefined, { schema: jsYaml.CORE_SCHEMA }).map((value) => ({ value }));
  } catch {
    return parseSlowly(text);
  }
}

function parseSlowly(text: string): ManifestDocument[] {
  const documents = parseAllDocuments(text, { prettyErrors: true });
  return (Array.isArray(documents) ? documents : [documents]).map((document) => {
    if (document.errors.length === 0) {
      // toJS expands aliases: a "billion laughs" document throws here ('Excessive alias count'), a refusal like any other.
      try {
        return { value: document.toJS() as unknown };
      } catch (error) {
        const start = document.contents?.range?.[0];
        const position = start === undefined ? undefined : lineAndColumn(text, start);
        return { error: { message: (error as Error).message, ...position } };
      }
    }
    const error = document.errors[0];
    const position = error.linePos?.[0];
    return { error: { message: error.message.split("\n")[0], line: position?.line, column: position?.col } };
  });
}

/** The 1-based line and column of an offset in `text`. */
function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, offset);
  const line = before.split("\n").length;
  return { line, column: offset - before.lastIndexOf("\n") };
}
