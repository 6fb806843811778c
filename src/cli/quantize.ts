/**
 * `deno task quantize [--pure] [--leave-output-tensor] [--allow-requantize] [--threads N]
 *  IN.gguf [OUT.gguf] TYPE [NTHREADS]`
 *
 * Quantizes a GGUF / PowerInfer GGUF model like PowerInfer's `quantize` (shared/spec/cli.md §3,
 * q4_0.md §5). TYPE is Q4_0, Q5_0, Q8_0, F16 or F32, by name (any case) or llama_ftype number.
 * Without OUT the output is `<dir of IN>/ggml-model-<TYPE>.gguf`. On a terminal a progress bar
 * shows tensor i/n, bytes and ETA; otherwise one plain line per tensor. Ends with a summary:
 * sizes before and after, time and MB/s. Errors are one line on stderr and exit status 1.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { reportError } from "./report_error.ts";
import { numberOption } from "./options.ts";
import { formatBytes, progressBar, statusLineWriter } from "./progress.ts";
import { ggmlTypeName } from "../gguf/types.ts";
import {
  parseQuantizeTarget,
  quantizeModel,
  type QuantizeProgress,
  type QuantizeSummary,
  type QuantizeTarget,
} from "../quant/quantize_model.ts";

const USAGE = "usage: deno task quantize [--pure] [--leave-output-tensor] [--allow-requantize] " +
  "[--threads N] IN.gguf [OUT.gguf] Q4_0|Q5_0|Q8_0|F16|F32 [NTHREADS]";

/**
 * Reads IN [OUT] TYPE [NTHREADS] the way PowerInfer's quantize does: when the second positional
 * parses as a type, there is no OUT.
 */
function parsePositionals(positionals: string[]): {
  input: string;
  output: string;
  target: QuantizeTarget;
  threads?: number;
} {
  const isType = (text: string | undefined) => {
    if (text === undefined) return false;
    try {
      parseQuantizeTarget(text);
      return true;
    } catch {
      return false;
    }
  };
  const threadsOf = (text: string | undefined) => {
    if (text === undefined) return undefined;
    if (!/^\d+$/.test(text)) throw new Error(`Bad NTHREADS "${text}": expected an integer`);
    return Number(text);
  };
  const [input, second, third, fourth, ...rest] = positionals;
  if (input === undefined || second === undefined) {
    throw new Error(`Expected IN.gguf [OUT.gguf] TYPE (${USAGE})`);
  }
  if (isType(second)) {
    if (fourth !== undefined) throw new Error(`Too many arguments (${USAGE})`);
    const target = parseQuantizeTarget(second);
    const output = join(dirname(input), `ggml-model-${target}.gguf`);
    return { input, output, target, threads: threadsOf(third) };
  }
  if (third === undefined) throw new Error(`Missing TYPE (${USAGE})`);
  if (rest.length > 0) throw new Error(`Too many arguments (${USAGE})`);
  return { input, output: second, target: parseQuantizeTarget(third), threads: threadsOf(fourth) };
}

/** Progress display: a redrawn bar on a terminal, plain lines otherwise. */
function progressPrinter(
  tty: boolean,
  write: (line: string) => void,
): (p: QuantizeProgress) => void {
  const encoder = new TextEncoder();
  const status = statusLineWriter(Deno.stdout);
  return (p) => {
    const e = p.entry;
    const conv = e.action === "copy"
      ? `${ggmlTypeName(e.srcType)} (copied)`
      : `${ggmlTypeName(e.srcType)} -> ${ggmlTypeName(e.dstType)}`;
    if (!tty) {
      if (p.phase === "done") {
        write(
          `[${p.index + 1}/${p.nTensors}] ${e.name} [${e.ne.join(", ")}] ${conv} ` +
            `(${formatBytes(p.outputBytesDone)} / ${formatBytes(p.outputBytesTotal)})`,
        );
      }
      return;
    }
    const frac = p.inputBytesTotal > 0 ? p.inputBytesDone / p.inputBytesTotal : 1;
    const n = p.phase === "done" ? p.index + 1 : p.index;
    status(
      `${progressBar(frac, p.elapsedMs)} ${n}/${p.nTensors} tensors, ` +
        `${formatBytes(p.inputBytesDone)}/${
          formatBytes(p.inputBytesTotal)
        } read  ${e.name} ${conv}`,
    );
    if (p.phase === "done" && p.index + 1 === p.nTensors) {
      Deno.stdout.writeSync(encoder.encode("\n"));
    }
  };
}

/** The closing lines: sizes, time, throughput and how many tensors became which type. */
export function formatSummary(s: QuantizeSummary): string[] {
  const counts = new Map<string, number>();
  for (const e of s.plan) {
    const key = e.action === "copy"
      ? `${ggmlTypeName(e.dstType)} (copied)`
      : ggmlTypeName(e.dstType);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const mbps = s.inputBytes / 1e6 / Math.max(s.seconds, 1e-9); // decimal MB
  return [
    `quantized ${s.inputPath} -> ${s.outputPath} (${s.target})`,
    `  size: ${formatBytes(s.inputBytes)} -> ${formatBytes(s.outputBytes)} ` +
    `(${(100 * s.outputBytes / Math.max(s.inputBytes, 1)).toFixed(1)}%)`,
    `  time: ${s.seconds.toFixed(2)} s, ${mbps.toFixed(1)} MB/s of input`,
    `  tensors: ${[...counts].map(([k, v]) => `${v} ${k}`).join(", ")}`,
  ];
}

/**
 * Runs the CLI on `args`; returns the exit status.
 *
 * @param args Command-line arguments (without the program name).
 * @param write Output sink for stdout lines.
 * @param writeError Output sink for stderr lines.
 * @returns 0 on success, 1 on any error.
 */
export async function quantizeMain(
  args: string[],
  write: (line: string) => void = console.log,
  writeError: (line: string) => void = console.error,
): Promise<number> {
  const abort = new AbortController();
  const onSignal = () => abort.abort(new Error("Interrupted"));
  const interactive = import.meta.main && Deno.build.os !== "windows";
  if (interactive) Deno.addSignalListener("SIGINT", onSignal);
  try {
    const { values, positionals } = parseArgs({
      args,
      options: {
        pure: { type: "boolean", default: false },
        "leave-output-tensor": { type: "boolean", default: false },
        "allow-requantize": { type: "boolean", default: false },
        threads: { type: "string", short: "t" },
        "no-progress": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      allowPositionals: true,
      strict: true,
    });
    if (values.help) {
      write(USAGE);
      return 0;
    }
    const pos = parsePositionals(positionals);
    const threadText = values.threads ??
      (pos.threads !== undefined ? String(pos.threads) : undefined);
    const threads = numberOption("threads", threadText, { integer: true, min: 0, max: 1024 });
    const tty = import.meta.main && Deno.stdout.isTerminal() && !values["no-progress"];
    const summary = await quantizeModel(pos.input, pos.output, pos.target, {
      pure: values.pure,
      leaveOutputTensor: values["leave-output-tensor"],
      allowRequantize: values["allow-requantize"],
      threads,
      signal: abort.signal,
      onProgress: values["no-progress"] ? undefined : progressPrinter(tty, write),
    });
    for (const line of formatSummary(summary)) write(line);
    return 0;
  } catch (e) {
    return reportError(e, writeError);
  } finally {
    if (interactive) Deno.removeSignalListener("SIGINT", onSignal);
  }
}

if (import.meta.main) {
  Deno.exit(await quantizeMain(Deno.args));
}
