/**
 * One way for every CLI to report a failure: a single `error: ...` line on stderr and exit
 * status 1. Multi-line messages (node:util parseArgs writes some) are folded into one line; a
 * stack trace is shown only when `POWERINFER_DEBUG` is set, for bug reports.
 *
 * @module
 */

/**
 * The one-line report of `error`.
 *
 * @param error What was thrown.
 * @returns `error: <message>`, one line.
 *
 * @example Folding a multi-line parseArgs message
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { errorLine } from "./report_error.ts";
 * equal(errorLine(new TypeError("Option '--x' is ambiguous.\nUse '--x=-1'.")),
 *   "error: Option '--x' is ambiguous. Use '--x=-1'.");
 * ```
 */
export function errorLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return `error: ${message.split("\n").map((l) => l.trim()).filter((l) => l).join(" ")}`;
}

/**
 * Writes the one-line report of `error` (plus its stack under `POWERINFER_DEBUG`).
 *
 * @param error What was thrown.
 * @param writeError The stderr sink.
 * @returns 1, the exit status for a failure.
 */
export function reportError(
  error: unknown,
  writeError: (line: string) => void = console.error,
): number {
  writeError(errorLine(error));
  let debug: string | undefined;
  try {
    debug = Deno.env.get("POWERINFER_DEBUG");
  } catch { /* no env permission */ }
  if (debug && error instanceof Error && error.stack) writeError(error.stack);
  return 1;
}

/**
 * The one-line report of a usage mistake, pointing at `--help`.
 *
 * @param message What is wrong with the command line.
 * @param task The task name, as in `deno task <task> --help`.
 * @returns `error: <message> (see deno task <task> --help)`.
 */
export function usageLine(message: string, task: string): string {
  return `${errorLine(message)} (see deno task ${task} --help)`;
}
