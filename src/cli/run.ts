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
import { PowerInferError } from "../errors.ts";

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
  -t, --threads N           threads (default: physical cores)
  -tb, --threads-batch N    threads for prompt batches (default: same as -t)
  -c, --ctx-size N          context size (default 512; 0 = model's training context)
  -b, --batch-size N        prompt tokens per decode (default 512)
      --temp T              temperature (default 0.8; 0 = greedy; demo default 0)
      --top-k N             top-k sampling (default 40; <= 0 = whole vocabulary)
      --top-p P             top-p sampling (default 0.95)
      --min-p P             min-p sampling (default 0.05)
      --repeat-penalty R    penalize repeated tokens (default 1.1; demo default 1.0)
      --repeat-last-n N     last N tokens to penalize (default 64; 0 = off, -1 = 64)
      --presence-penalty F  (default 0)
      --frequency-penalty F (default 0)
  -s, --seed N              RNG seed (default -1 = from the clock)
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

function num(values: Record<string, unknown>, name: string, int: boolean): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (raw === "" || !Number.isFinite(v) || (int && !Number.isInteger(v))) {
    throw new UsageError(`error: invalid parameter for argument: --${name}`);
  }
  return v;
}

/** Formats the timing block exactly like `llama_print_timings` (cli.md §1). */
export function formatTimings(t: Model["timings"], totalMs: number): string {
  const f = (v: number, w: number) => v.toFixed(2).padStart(w);
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
    console.error(m ? `error: unknown argument: ${m[1]}` : `error: ${msg}`);
    console.error(USAGE);
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
    const nPredict = num(values, "n-predict", true) ?? (demo ? 64 : 128);
    const temperature = num(values, "temp", false) ?? (demo ? 0 : undefined);
    const repeatPenalty = num(values, "repeat-penalty", false) ?? (demo ? 1.0 : undefined);
    const sampling = Object.fromEntries(
      Object.entries({
        temperature,
        topK: num(values, "top-k", true),
        topP: num(values, "top-p", false),
        minP: num(values, "min-p", false),
        repeatPenalty,
        repeatLastN: num(values, "repeat-last-n", true),
        presencePenalty: num(values, "presence-penalty", false),
        frequencyPenalty: num(values, "frequency-penalty", false),
        seed: num(values, "seed", true),
      }).filter(([, v]) => v !== undefined),
    );
    let promptText: string | undefined = values.prompt as string | undefined;
    if (values.file !== undefined) {
      promptText = (await Deno.readTextFile(values.file as string)).replace(/\n$/, "");
    }
    if (values.escape && promptText !== undefined) promptText = unescape(promptText);
    let promptIds: number[] | undefined;
    if (values["prompt-ids"] !== undefined) {
      promptIds = String(values["prompt-ids"]).split(",").filter((s) => s.trim() !== "").map(
        (s) => {
          const v = Number(s);
          if (!Number.isInteger(v) || v < 0) {
            throw new UsageError(`error: invalid parameter for argument: --prompt-ids`);
          }
          return v;
        },
      );
    }
    if (promptText === undefined && promptIds === undefined) promptText = demo ? DEMO_PROMPT : "";
    const logitBias: Record<number, number> = {};
    for (const spec of (values["logit-bias"] as string[] | undefined) ?? []) {
      const m = /^(\d+)\s*([+-])\s*(inf|[\d.eE+-]+)$/i.exec(spec.trim());
      const bias = m ? (m[3]!.toLowerCase() === "inf" ? Infinity : Number(m[3])) : NaN;
      if (!m || Number.isNaN(bias)) {
        throw new UsageError(`error: invalid parameter for argument: --logit-bias`);
      }
      logitBias[Number(m[1])] = m[2] === "-" ? -bias : bias;
    }
    const vramBudget = num(values, "vram-budget", false);

    using model = loadModel(demo ? DEMO_MODEL : values.model as string, {
      threads: num(values, "threads", true),
      threadsBatch: num(values, "threads-batch", true),
      nCtx: num(values, "ctx-size", true) ?? (demo ? 0 : undefined), // demo: its own 256
      nBatch: num(values, "batch-size", true),
      kvType: values["memory-f32"] ? "f32" : "f16",
      ropeFreqBase: num(values, "rope-freq-base", false),
      ropeFreqScale: num(values, "rope-freq-scale", false) ??
        (values["rope-scale"] !== undefined ? 1 / num(values, "rope-scale", false)! : undefined),
      vramBudget,
      resetGpuIndex: values["reset-gpu-index"] as boolean | undefined,
      disableGpuIndex: values["disable-gpu-index"] as boolean | undefined,
    });
    if (values.summary || !values.json) console.error(model.summary());
    if (model.nCtx > model.config.nCtxTrain) {
      console.error(
        `warning: model was trained on only ${model.config.nCtxTrain} context tokens (${model.nCtx} specified)`,
      );
    }
    if (model.config.sparse) {
      console.error(`llm_load_print_meta: sparse_pred_threshold = ${model.threshold.toFixed(2)}`);
    }
    let ids = promptIds ?? model.tokenize(promptText!, {
      parseSpecial: true,
      dummyPrefix: !values["no-dummy-prefix"],
    });
    if (ids.length === 0) ids = [model.tokenizer.bosId]; // like main: an empty prompt is [BOS]
    const abort = new AbortController();
    const onSignal = () => abort.abort(new Error("interrupted"));
    try {
      Deno.addSignalListener("SIGINT", onSignal);
    } catch { /* not supported here */ }
    const generated: number[] = [];
    let text = "";
    let stoppedEos = false;
    try {
      if (!values.json) {
        // echo the prompt, like main
        await Deno.stdout.write(encoder.encode(promptIds ? model.detokenize(ids) : promptText!));
      }
      for await (
        const piece of model.generate(ids, {
          ...sampling,
          maxTokens: nPredict === -2 ? -1 : nPredict,
          contextShift: nPredict !== -2,
          nKeep: num(values, "keep", true),
          ignoreEos: values["ignore-eos"] as boolean | undefined,
          logitBias,
          stop: values["reverse-prompt"] as string[] | undefined,
          signal: abort.signal,
        })
      ) {
        if (piece.id >= 0) generated.push(piece.id);
        if (piece.id === model.tokenizer.eosId && !values["ignore-eos"]) stoppedEos = true;
        text += piece.text;
        if (!values.json && piece.text) await Deno.stdout.write(encoder.encode(piece.text));
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
          prompt_tokens_per_second: t.promptTokens > 0
            ? (1000 * t.promptTokens) / t.promptEvalMs
            : 0,
          eval_ms: t.evalMs,
          eval_runs: t.evalRuns,
          eval_tokens_per_second: t.evalRuns > 0 ? (1000 * t.evalRuns) / t.evalMs : 0,
          total_ms: totalMs,
        },
      }));
    } else {
      await Deno.stdout.write(encoder.encode("\n"));
      if (stoppedEos) console.error(" [end of text]");
    }
    console.error(formatTimings(t, totalMs));
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(error.message);
      console.error(USAGE);
      return 1;
    }
    if (error instanceof PowerInferError || error instanceof RangeError) {
      console.error(`error: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
