/**
 * What the long-running CLIs (quantize, convert) show while they work: sizes and durations in
 * words, a bar, an ETA, and a status line redrawn in place on a terminal.
 *
 * @module
 */

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

/**
 * A byte count for people: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.25 GiB`.
 *
 * @param n Bytes.
 * @returns The size with a binary unit.
 *
 * @example
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { formatBytes } from "./progress.ts";
 * equal(formatBytes(512), "512 B");
 * equal(formatBytes(3 * 2 ** 20), "3.0 MiB");
 * equal(formatBytes(2 ** 30), "1.00 GiB");
 * ```
 */
export function formatBytes(n: number): string {
  if (n >= GIB) return `${(n / GIB).toFixed(2)} GiB`;
  if (n >= MIB) return `${(n / MIB).toFixed(1)} MiB`;
  if (n >= KIB) return `${(n / KIB).toFixed(1)} KiB`;
  return `${n} B`;
}

/**
 * A duration for an ETA: `42s`, `3m07s`, or `?` when unknown.
 *
 * @param s Seconds (may be Infinity).
 * @returns The duration.
 *
 * @example
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { formatSeconds } from "./progress.ts";
 * equal(formatSeconds(187), "3m07s");
 * equal(formatSeconds(Infinity), "?");
 * ```
 */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 60) return `${s.toFixed(0)}s`;
  return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
}

/**
 * The bar and ETA of a job `frac` done after `elapsedMs`: `[#####-----] ETA 12s`.
 *
 * @param frac Fraction done, 0..1.
 * @param elapsedMs Time spent so far.
 * @param width Bar width in characters.
 * @returns The bar text.
 *
 * @example Half done after 10 s
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { progressBar } from "./progress.ts";
 * equal(progressBar(0.5, 10_000, 10), "[#####-----] ETA 10s");
 * ```
 */
export function progressBar(frac: number, elapsedMs: number, width = 30): string {
  const filled = Math.max(0, Math.min(width, Math.round(frac * width)));
  const secs = elapsedMs / 1000;
  const eta = frac > 0 ? secs * (1 - frac) / frac : Infinity;
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ETA ${formatSeconds(eta)}`;
}

/**
 * A writer that redraws one status line in place on a terminal (cut to the terminal width).
 *
 * @param stream Where the terminal is (`Deno.stdout` or `Deno.stderr`).
 * @returns `(line) => void`; `line` is drawn over the previous one.
 */
export function statusLineWriter(
  stream: { writeSync(p: Uint8Array): number },
): (line: string) => void {
  const encoder = new TextEncoder();
  return (line) => {
    let cols = 0;
    try {
      cols = Deno.consoleSize().columns;
    } catch {
      // not a console after all
    }
    if (cols < 40) cols = 120;
    stream.writeSync(encoder.encode(`\r${line.slice(0, cols - 1)}\x1b[K`));
  };
}
