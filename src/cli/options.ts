/**
 * Numeric command-line options, checked one way for every CLI: `--name TEXT` must be a finite
 * number, optionally an integer within a range, or the CLI fails with one line that says what
 * was expected.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { usageLine } from "./report_error.ts";

/** What a numeric option accepts. */
export interface NumberOptionRule {
  /** Whole numbers only. */
  integer?: boolean;
  /** Smallest accepted value (inclusive). */
  min?: number;
  /** Largest accepted value (inclusive). */
  max?: number;
  /** The unit named in the message (`GiB`). */
  unit?: string;
}

/**
 * Parses the text of a numeric option.
 *
 * @param name The option name without dashes.
 * @param text Its text, or undefined when not given.
 * @param rule What it accepts.
 * @returns The number, or undefined when not given.
 * @throws {RangeError} `Invalid --name TEXT: expected ...` when it is not accepted.
 *
 * @example
 * ```ts
 * import { equal, throws } from "node:assert/strict";
 * import { numberOption } from "./options.ts";
 * equal(numberOption("threads", "4", { integer: true, min: 1 }), 4);
 * equal(numberOption("threads", undefined, { integer: true, min: 1 }), undefined);
 * throws(() => numberOption("threads", "abc", { integer: true, min: 1 }),
 *   /Invalid --threads abc: expected an integer >= 1/);
 * ```
 */
export function numberOption(
  name: string,
  text: string | undefined,
  rule: NumberOptionRule = {},
): number | undefined {
  if (text === undefined) return undefined;
  const n = text.trim() === "" ? NaN : Number(text);
  const ok = Number.isFinite(n) && (!rule.integer || Number.isInteger(n)) &&
    (rule.min === undefined || n >= rule.min) && (rule.max === undefined || n <= rule.max);
  if (ok) return n;
  const kind = rule.integer ? "an integer" : "a number";
  const range = rule.min !== undefined && rule.max !== undefined
    ? ` in ${rule.min}..${rule.max}`
    : rule.min !== undefined
    ? ` >= ${rule.min}`
    : rule.max !== undefined
    ? ` <= ${rule.max}`
    : "";
  const unit = rule.unit ? ` (${rule.unit})` : "";
  throw new RangeError(`Invalid --${name} ${text}: expected ${kind}${range}${unit}`);
}

/**
 * Parses a CLI's arguments (node:util parseArgs, strict) the way every task does: a usage
 * mistake is one `error: ... (see deno task TASK --help)` line and exit status 1, and `--help`
 * (when the options have it) prints `usage` and exit status 0.
 *
 * @param task The task name, for the `--help` hint.
 * @param usage The help text.
 * @param config The parseArgs config.
 * @returns The parsed result, or the exit status to return at once.
 *
 * @example Help, a mistake, and a parse
 * ```ts
 * import { deepStrictEqual, equal } from "node:assert/strict";
 * import { parseCliArgs } from "./options.ts";
 * const options = { help: { type: "boolean", short: "h" }, n: { type: "string" } } as const;
 * const quiet = { log: () => {}, error: () => {} };
 * equal(parseCliArgs("x", "usage", { args: ["-h"], options }, quiet), 0);
 * equal(parseCliArgs("x", "usage", { args: ["--bad"], options }, quiet), 1);
 * const r = parseCliArgs("x", "usage", { args: ["--n", "3"], options }, quiet);
 * deepStrictEqual(typeof r === "number" ? r : r.values.n, "3");
 * ```
 */
export function parseCliArgs<T extends ParseArgsConfig>(
  task: string,
  usage: string,
  config: T,
  out: { log(line: string): void; error(line: string): void } = console,
): ReturnType<typeof parseArgs<T>> | number {
  let parsed: ReturnType<typeof parseArgs<T>>;
  try {
    parsed = parseArgs(config);
  } catch (error) {
    out.error(usageLine((error as Error).message, task));
    return 1;
  }
  if ((parsed.values as Record<string, unknown>).help) {
    out.log(usage);
    return 0;
  }
  return parsed;
}
