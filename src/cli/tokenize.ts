/**
 * `deno task tokenize -m FILE [--json] [--no-bos] [--special] TEXT`
 *
 * Prints the token ids of TEXT under the vocabulary of a GGUF model or vocab-only file, one
 * `id<TAB>piece` line per token (the piece JSON-quoted), or `{ "ids": [...] }` with `--json`.
 * BOS is added when the model asks for it (SPM vocabularies) unless `--no-bos`; `--special`
 * tokenizes like PowerInfer `main` does its prompt (special tokens recognised, no SPM dummy
 * prefix). Errors are one line on stderr and exit status 1.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { reportError } from "./report_error.ts";
import { loadTokenizer } from "../tokenizer/tokenizer.ts";

const USAGE = "usage: deno task tokenize -m FILE [--json] [--no-bos] [--special] TEXT";

/**
 * Runs the CLI on `args`; returns the exit status.
 *
 * @param args Command-line arguments (without the program name).
 * @param write Output sink for stdout lines.
 * @param writeError Output sink for stderr lines.
 * @returns 0 on success, 1 on any error.
 */
export function tokenizeMain(
  args: string[],
  write: (line: string) => void = console.log,
  writeError: (line: string) => void = console.error,
): number {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: {
        model: { type: "string", short: "m" },
        json: { type: "boolean", default: false },
        "no-bos": { type: "boolean", default: false },
        special: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      allowPositionals: true,
      strict: true,
    });
    if (values.help) {
      write(USAGE);
      return 0;
    }
    if (!values.model) throw new Error(`Missing -m FILE (${USAGE})`);
    if (positionals.length === 0) throw new Error(`Missing TEXT (${USAGE})`);
    const text = positionals.join(" ");
    const tok = loadTokenizer(values.model, { onWarning: (m) => writeError(`warning: ${m}`) });
    const ids = tok.encode(text, {
      addBos: values["no-bos"] ? false : tok.addBos,
      parseSpecial: values.special,
    });
    if (values.json) {
      write(JSON.stringify({ ids }));
    } else {
      const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
      for (const id of ids) {
        const bytes = tok.tokenBytes(id);
        // A piece that is part of a UTF-8 character shows as its bytes.
        let piece: string;
        try {
          piece = JSON.stringify(strict.decode(bytes));
        } catch {
          piece = [...bytes].map((b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`)
            .join("");
        }
        write(`${id}\t${piece}`);
      }
    }
    return 0;
  } catch (e) {
    return reportError(e, writeError);
  }
}

if (import.meta.main) {
  Deno.exit(tokenizeMain(Deno.args));
}
