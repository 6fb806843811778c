/**
 * `deno task run`: generate text from a model file, like PowerInfer's `main` (spec cli.md §1).
 * Text streams to stdout as it is made; logs and timings go to stderr. With no `-m` it runs
 * the built-in demo model (assets/fortune-relu.q4.powerinfer.gguf) on a default prompt.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { loadModel, type Model } from "../model/model.ts";
import { fsErrorReason } from "../gguf/output_file.ts";
import { numberOption, type NumberOptionRule } from "./options.ts";
import { reportError, usageLine } from "./report_error.ts";

const DEMO_MODEL = fileURLToPath(
  new URL("../../assets/fortune-relu.q4.powerinfer.gguf", import.meta.url),
);
const DEMO_PROMPT = "A";

const USAGE = `usage: deno task run [options]

Generates text with a PowerInfer (PWRI) or dense GGUF model. With no -m, runs the built-in
fortune demo model (greedy) on the prompt "${DEMO_PROMPT}".

options:
  -h, --help                show this help and exit
  -m, --model FNAME         model path (default: built-in demo model)
  -p, --prompt PROMPT       prompt to start generation with
  -f, --file FNAME          read the prompt from a file (one trailing newline removed)
  -e, --escape              process escapes (\\n, \\r, \\t, \\', \\", \\\\, \\xNN) in the prompt
      --prompt-ids 1,2,3    token ids to use as the prompt instead of text
      --no-dummy-prefix     tokenize like PowerInfer main (no SentencePiece leading space)
  -n, --n-predict N         tokens to predict (default 128; -1 = until EOS, shifting a full
                            context; -2 = until the context is full)
      --keep N              prompt tokens kept when the context shifts (default 0; -1 = all)
  -t, --threads N           threads (default: physical cores; <= 0 = every hardware thread)
  -tb, --threads-batch N    threads for prompt batches (default, or -1: same as -t)
  -c, --ctx-size N          context size (default 512; 0 = model's training context; at
                            least 8)
  -b, --batch-size N        prompt tokens per decode (default 512)
      --temp T              temperature (default 0.8; <= 0 = greedy; demo default 0)
      --top-k N             top-k sampling (default 40; <= 0 = whole vocabulary)
      --top-p P             top-p sampling, 0..1 (default 0.95)
      --min-p P             min-p sampling, 0..1 (default 0.05)
      --repeat-penalty R    penalize repeated tokens (default 1.1; demo default 1.0)
      --repeat-last-n N     last N tokens to penalize (default 64; 0 = off, -1 = 64)
      --presence-penalty F  (default 0)
      --frequency-penalty F (default 0)
  -s, --seed N              RNG seed, 0..4294967295 (default -1 = from the clock)
      --ignore-eos          keep generating after end of text
  -r, --reverse-prompt S    stop when S appears in the generated text (repeatable)
  -l, --logit-bias ID(+/-)B add B to token ID's logit (repeatable; B may be -inf)
      --memory-f32          f32 KV cache instead of f16
      --rope-freq-base F    RoPE base frequency (default: from the model)
      --rope-freq-scale F   RoPE frequency scale (default: from the model)
      --rope-scale N        RoPE context scale: --rope-freq-scale 1/N
      --json                print one JSON object {prompt_ids, generated_ids, text, timings}
      --vram-budget G       VRAM budget in GiB for hot neurons (CPU build: ignored, warns)
      --reset-gpu-index     regenerate the GPU index
      --disable-gpu-index   keep every FFN neuron on the CPU
      --summary             print the model summary to stderr before generating

environment: LLAMA_SPARSE_PRED_THRESHOLD overrides the predictor threshold.
`;

const OPTIONS = {
  help: { type: "boolean", short: "h" },
  model: { type: "string", short: "m" },
  prompt: { type: "string", short: "p" },
  file: { type: "string", short: "f" },
  escape: { type: "boolean", short: "e" },
  "prompt-ids": { type: "string" },
  "no-dummy-prefix": { type: "boolean" },
  "n-predict": { type: "string", short: "n" },
  keep: { type: "string" },
  threads: { type: "string", short: "t" },
  "threads-batch": { type: "string" },
  "ctx-size": { type: "string", short: "c" },
  "batch-size": { type: "string", short: "b" },
  temp: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  "repeat-penalty": { type: "string" },
  "repeat-last-n": { type: "string" },
  "presence-penalty": { type: "string" },
  "frequency-penalty": { type: "string" },
  seed: { type: "string", short: "s" },
  "ignore-eos": { type: "boolean" },
  "reverse-prompt": { type: "string", short: "r", multiple: true },
  "logit-bias": { type: "string", short: "l", multiple: true },
  "memory-f32": { type: "boolean" },
  "rope-freq-base": { type: "string" },
  "rope-freq-scale": { type: "string" },
  "rope-scale": { type: "string" },
  json: { type: "boolean" },
  "vram-budget": { type: "string" },
  "reset-gpu-index": { type: "boolean" },
  "disable-gpu-index": { type: "boolean" },
  summary: { type: "boolean" },
} as const;

class UsageError extends Error {}

/** What each numeric option accepts (checked before any file is opened). */
const NUMBER_RULES: Record<string, NumberOptionRule> = {
  "n-predict": { integer: true, min: -2 },
  keep: { integer: true, min: -1 },
  threads: { integer: true, max: 1024 },
  "threads-batch": { integer: true, max: 1024 },
  "ctx-size": { integer: true, min: 0 },
  "batch-size": { integer: true, min: 1 },
  temp: {},
  "top-k": { integer: true },
  "top-p": { min: 0, max: 1 },
  "min-p": { min: 0, max: 1 },
  "repeat-penalty": { min: 0 },
  "repeat-last-n": { integer: true, min: -1 },
  "presence-penalty": {},
  "frequency-penalty": {},
  seed: { integer: true, min: -1, max: 0xffffffff },
  "rope-freq-base": { min: 0 },
  "rope-freq-scale": { min: 0 },
  "rope-scale": { min: 0 },
  "vram-budget": {},
};

/** The smallest context `main` accepts (smaller ones are raised to it with a warning). */
const MIN_N_CTX = 8;

function num(values: Record<string, unknown>, name: string): number | undefined {
  try {
    return numberOption(name, values[name] as string | undefined, NUMBER_RULES[name]);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** `-t N`: like `main`, N <= 0 means every hardware thread. */
function threadCount(n: number | undefined): number | undefined {
  return n === undefined || n > 0 ? n : navigator.hardwareConcurrency;
}

/** Formats the timing block exactly like `llama_print_timings` (cli.md §1). */
export function formatTimings(t: Model["timings"], totalMs: number): string {
  // printf("%f") spells an infinite rate (a 0 ms decode) "inf"
  const f = (v: number, w: number) =>
    (Number.isFinite(v) ? v.toFixed(2) : Number.isNaN(v) ? "nan" : v > 0 ? "inf" : "-inf")
      .padStart(w);
  const d = (v: number, w: number) => String(v).padStart(w);
  const line = (label: string, ms: number, n: number, unit: string) => {
    const c = Math.max(1, n);
    return `llama_print_timings: ${label} = ${f(ms, 10)} ms / ${d(n, 5)} ${unit} (${
      f(ms / c, 8)
    } ms per token, ${f((1000 / ms) * c, 8)} tokens per second)`;
  };
  return [
    "",
    `llama_print_timings:        load time = ${f(t.loadMs, 10)} ms`,
    line("     sample time", t.sampleMs, t.sampleRuns, "runs  "),
    line("prompt eval time", t.promptEvalMs, t.promptTokens, "tokens"),
    line("       eval time", t.evalMs, t.evalRuns, "runs  "),
    `llama_print_timings:       total time = ${f(totalMs, 10)} ms`,
  ].join("\n");
}

/**
 * `--top_k` → `--top-k` (cli.md), and negative numbers glued to their option (`-n -1` →
 * `--n-predict=-1`), which node's parseArgs would otherwise take for an option.
 */
function normalizeArgs(args: string[]): string[] {
  const byShort = new Map<string, string>();
  for (const [name, o] of Object.entries(OPTIONS)) {
    if ("short" in o) byShort.set(`-${o.short}`, name);
  }
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    let a = args[i]! === "-tb" ? "--threads-batch" : args[i]!;
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      a = eq < 0 ? a.replaceAll("_", "-") : a.slice(0, eq).replaceAll("_", "-") + a.slice(eq);
    }
    const name = a.startsWith("--") ? a.slice(2) : byShort.get(a);
    const next = args[i + 1];
    if (
      name !== undefined && !a.includes("=") &&
      (OPTIONS as Record<string, { type: string }>)[name]?.type === "string" &&
      next !== undefined && /^-[\d.]/.test(next)
    ) {
      out.push(`--${name}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

/** `-e`: the escapes `main` understands (cli.md §1). */
function unescape(text: string): string {
  const simple: Record<string, string> = {
    n: "\n",
    r: "\r",
    t: "\t",
    "'": "'",
    '"': '"',
    "\\": "\\",
  };
  return text.replace(/\\(x[0-9a-fA-F]{2}|.)/g, (m, c: string) => {
    if (c.length === 3) return String.fromCharCode(parseInt(c.slice(1), 16));
    return simple[c] ?? m;
  });
}

/** Reads the `-f` prompt file (one trailing newline removed), failing in one line. */
async function readPromptFile(path: string): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).replace(/\n$/, "");
  } catch (error) {
    throw new Error(`Cannot read prompt file "${path}": ${fsErrorReason(error)}`, {
      cause: error,
    });
  }
}

/** `--prompt-ids 1,2,3`: non-negative integers, at least one. */
function parsePromptIds(text: string): number[] {
  const parts = text.split(",").map((s) => s.trim());
  const ids = parts.map(Number);
  const bad = parts.findIndex((s, i) => s === "" || !Number.isInteger(ids[i]) || ids[i]! < 0);
  if (bad >= 0) {
    throw new UsageError(
      `Invalid --prompt-ids ${text}: expected comma-separated token ids >= 0, found "${
        parts[bad]
      }"`,
    );
  }
  return ids;
}

/** Runs the CLI; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const normalized = normalizeArgs(args);
  let values: Record<string, unknown>;
  try {
    values =
      parseArgs({ args: normalized, options: OPTIONS, allowPositionals: false, strict: true })
        .values;
  } catch (error) {
    const msg = error instanceof Error ? error.message : String(error);
    const m = /Unknown option '([^']+)'/.exec(msg);
    // cli.md spells this one "error: unknown argument: X"
    console.error(
      m ? `error: unknown argument: ${m[1]} (see deno task run --help)` : usageLine(msg, "run"),
    );
    return 1;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const t0 = performance.now();
  const demo = values.model === undefined;
  const encoder = new TextEncoder();
  try {
    const nPredict = num(values, "n-predict") ?? (demo ? 64 : 128);
    const temperature = num(values, "temp") ?? (demo ? 0 : undefined);
    const repeatPenalty = num(values, "repeat-penalty") ?? (demo ? 1.0 : undefined);
    const sampling = Object.fromEntries(
      Object.entries({
        temperature,
        topK: num(values, "top-k"),
        topP: num(values, "top-p"),
        minP: num(values, "min-p"),
        repeatPenalty,
        repeatLastN: num(values, "repeat-last-n"),
        presencePenalty: num(values, "presence-penalty"),
        frequencyPenalty: num(values, "frequency-penalty"),
        seed: num(values, "seed"),
      }).filter(([, v]) => v !== undefined),
    );
    const nKeep = num(values, "keep");
    const threads = threadCount(num(values, "threads"));
    const threadsBatchOption = num(values, "threads-batch");
    const threadsBatch = threadsBatchOption === undefined || threadsBatchOption === -1
      ? undefined
      : threadCount(threadsBatchOption);
    let nCtx = num(values, "ctx-size") ?? (demo ? 0 : undefined); // demo: its own 256
    if (nCtx !== undefined && nCtx > 0 && nCtx < MIN_N_CTX) {
      console.error(`warning: minimum context size is ${MIN_N_CTX}, using it instead of ${nCtx}`);
      nCtx = MIN_N_CTX;
    }
    const nBatch = num(values, "batch-size");
    const ropeFreqBase = num(values, "rope-freq-base");
    const ropeScale = num(values, "rope-scale");
    if (ropeScale === 0) {
      throw new UsageError("Invalid --rope-scale 0: expected a number > 0 (the context factor)");
    }
    const ropeFreqScale = num(values, "rope-freq-scale") ??
      (ropeScale !== undefined ? 1 / ropeScale : undefined);
    const vramBudget = num(values, "vram-budget");
    let promptText: string | undefined = values.prompt as string | undefined;
    if (values.file !== undefined) promptText = await readPromptFile(values.file as string);
    if (values.escape && promptText !== undefined) promptText = unescape(promptText);
    const promptIds = values["prompt-ids"] !== undefined
      ? parsePromptIds(String(values["prompt-ids"]))
      : undefined;
    if (promptText === undefined && promptIds === undefined) promptText = demo ? DEMO_PROMPT : "";
    const logitBias: Record<number, number> = {};
    for (const spec of (values["logit-bias"] as string[] | undefined) ?? []) {
      const m = /^(\d+)\s*([+-])\s*(inf|[\d.eE+-]+)$/i.exec(spec.trim());
      const bias = m ? (m[3]!.toLowerCase() === "inf" ? Infinity : Number(m[3])) : NaN;
      if (!m || Number.isNaN(bias)) {
        throw new UsageError(`Invalid --logit-bias ${spec}: expected ID+BIAS or ID-BIAS`);
      }
      logitBias[Number(m[1])] = m[2] === "-" ? -bias : bias;
    }

    using model = loadModel(demo ? DEMO_MODEL : values.model as string, {
      threads,
      threadsBatch,
      nCtx,
      nBatch,
      kvType: values["memory-f32"] ? "f32" : "f16",
      ropeFreqBase,
      ropeFreqScale,
      vramBudget,
      resetGpuIndex: values["reset-gpu-index"] as boolean | undefined,
      disableGpuIndex: values["disable-gpu-index"] as boolean | undefined,
    });
    let ids = promptIds ?? model.tokenize(promptText!, {
      parseSpecial: true,
      dummyPrefix: !values["no-dummy-prefix"],
    });
    if (ids.length === 0) ids = [model.tokenizer.bosId]; // like main: an empty prompt is [BOS]
    // Checked before anything is printed, so a bad prompt fails in one line.
    const outside = ids.find((id) => id >= model.config.nVocab);
    if (outside !== undefined) {
      throw new RangeError(
        `Prompt token id ${outside} is outside the vocabulary [0, ${model.config.nVocab})`,
      );
    }
    if (ids.length > model.nCtx - 4) {
      throw new RangeError(
        `Prompt has ${ids.length} tokens but a context of ${model.nCtx} holds at most ${
          Math.max(0, model.nCtx - 4)
        } (-c minus 4): raise -c`,
      );
    }
    if (values.summary || !values.json) console.error(model.summary());
    if (model.nCtx > model.config.nCtxTrain) {
      console.error(
        `warning: model was trained on only ${model.config.nCtxTrain} context tokens (${model.nCtx} specified)`,
      );
    }
    if (model.config.sparse) {
      console.error(`llm_load_print_meta: sparse_pred_threshold = ${model.threshold.toFixed(2)}`);
    }
    const abort = new AbortController();
    const onSignal = () => abort.abort(new Error("interrupted"));
    try {
      Deno.addSignalListener("SIGINT", onSignal);
    } catch { /* not supported here */ }
    const generated: number[] = [];
    let text = "";
    let stoppedEos = false;
    // The prompt is echoed (like main) once generation has started without an error.
    let echo = values.json ? "" : promptIds ? model.detokenize(ids) : promptText!;
    const write = async (s: string) => {
      if (echo) {
        await Deno.stdout.write(encoder.encode(echo));
        echo = "";
      }
      if (s) await Deno.stdout.write(encoder.encode(s));
    };
    try {
      for await (
        const piece of model.generate(ids, {
          ...sampling,
          maxTokens: nPredict === -2 ? -1 : nPredict,
          contextShift: nPredict !== -2,
          nKeep,
          ignoreEos: values["ignore-eos"] as boolean | undefined,
          logitBias,
          stop: values["reverse-prompt"] as string[] | undefined,
          signal: abort.signal,
        })
      ) {
        if (piece.id >= 0) generated.push(piece.id);
        if (piece.id === model.tokenizer.eosId && !values["ignore-eos"]) stoppedEos = true;
        text += piece.text;
        if (!values.json) await write(piece.text);
      }
    } catch (error) {
      if (!abort.signal.aborted) throw error;
      console.error("\ninterrupted");
    } finally {
      try {
        Deno.removeSignalListener("SIGINT", onSignal);
      } catch { /* ignore */ }
    }
    const totalMs = performance.now() - t0;
    const t = model.timings;
    if (values.json) {
      console.log(JSON.stringify({
        prompt_ids: ids,
        generated_ids: generated,
        text,
        timings: {
          load_ms: t.loadMs,
          sample_ms: t.sampleMs,
          prompt_eval_ms: t.promptEvalMs,
          prompt_tokens: t.promptTokens,
          prompt_tokens_per_second: t.promptEvalMs > 0
            ? (1000 * t.promptTokens) / t.promptEvalMs
            : 0,
          eval_ms: t.evalMs,
          eval_runs: t.evalRuns,
          eval_tokens_per_second: t.evalMs > 0 ? (1000 * t.evalRuns) / t.evalMs : 0,
          total_ms: totalMs,
        },
      }));
    } else {
      await write("\n");
      if (stoppedEos) console.error(" [end of text]");
    }
    console.error(formatTimings(t, totalMs));
    return abort.signal.aborted ? 130 : 0; // 130 after Ctrl-C, like main
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(usageLine(error.message, "run"));
      return 1;
    }
    // One line for everything else too (the stack only under POWERINFER_DEBUG).
    return reportError(error);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
