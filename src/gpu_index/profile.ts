/**
 * Activation profiling: runs a model over text and counts, per layer and FFN neuron, the tokens
 * for which the neuron fired — the statistics the GPU-index solver needs, made without PyTorch.
 *
 * Two modes:
 * - `"gate"` (default): every neuron is computed (predictor threshold −∞) and a neuron fires when
 *   its gate pre-activation is > 0 (up for Falcon). This is how PowerInfer's published statistics
 *   and the fixtures' `activation/` folders were made (a dense forward pass).
 * - `"predictor"`: the model's own threshold; a neuron counts when the predictor selected it AND
 *   its gate was > 0 — what the sparse engine actually computes.
 *
 * Text is tokenized per document as `[BOS] + tokens + [EOS]` (the fortune fixture's validation
 * stream), the documents are concatenated, and the stream is run in windows of `nCtx` tokens
 * (the context is reset between windows).
 *
 * @module
 */

import { GpuIndexError } from "../errors.ts";
import { loadModel } from "../model/model.ts";
import type { ActivationStats } from "./stats.ts";

/** Options of {@link profileActivations}. */
export interface ProfileOptions {
  /** `"gate"` (default) or `"predictor"` (see the module doc). */
  readonly mode?: "gate" | "predictor";
  /** Window (context) size in tokens; default: the model's training context, at most 512. */
  readonly nCtx?: number;
  /** Tokens per decode (default 64). */
  readonly nBatch?: number;
  /** CPU threads. */
  readonly threads?: number;
  /** Stop after this many tokens (default: all). */
  readonly maxTokens?: number;
  /** Called after every window with tokens done and total. */
  readonly onProgress?: (done: number, total: number) => void;
}

/** Result of {@link profileActivations}. */
export interface ProfileResult extends ActivationStats {
  /** Per layer: mean fraction of neurons active per token. */
  readonly activeFraction: number[];
  readonly mode: "gate" | "predictor";
  readonly threshold: number;
}

/**
 * Profiles a model over documents.
 *
 * @param modelPath A PWRI model.
 * @param documents Texts; each becomes `[BOS] + tokens + [EOS]`.
 * @param opts Mode, window, batch, threads, token cap, progress.
 * @returns Per-layer counts, the token count and per-layer active fractions.
 * @throws {GpuIndexError} If the model is not sparse (no predictor) or the text has no tokens.
 *
 * @example
 * ```ts ignore
 * import { profileActivations } from "./profile.ts";
 * const r = profileActivations("fortune-relu.q4.powerinfer.gguf", ["A fortune.", "Another."]);
 * console.log(r.activeFraction);
 * ```
 */
export function profileActivations(
  modelPath: string,
  documents: readonly string[],
  opts: ProfileOptions = {},
): ProfileResult {
  const mode = opts.mode ?? "gate";
  let counts: Float64Array[] = [];
  let calls: number[] = [];
  let nFf = 0;
  using model = loadModel(modelPath, {
    nCtx: opts.nCtx ?? 0,
    nBatch: opts.nBatch ?? 64,
    threads: opts.threads,
    ...(mode === "gate" ? { sparseThreshold: -Infinity } : {}),
    onFfnActivation: (layer, active) => {
      const c = counts[layer]!;
      for (let j = 0; j < nFf; j++) c[j]! += active[j]!;
      calls[layer]!++;
    },
  });
  const c = model.config;
  if (!c.sparse) {
    throw new GpuIndexError(
      `${modelPath} is a dense model: profiling needs a PowerInfer (PWRI) model with predictors`,
    );
  }
  nFf = c.nFf;
  counts = Array.from({ length: c.nLayer }, () => new Float64Array(nFf));
  calls = new Array<number>(c.nLayer).fill(0);
  const nCtx = opts.nCtx ?? Math.min(model.nCtx, 512);
  const stream: number[] = [];
  const bos = model.tokenizer.bosId;
  const eos = model.tokenizer.eosId;
  for (const doc of documents) {
    if (bos >= 0) stream.push(bos);
    stream.push(...model.tokenize(doc, { addBos: false }));
    if (eos >= 0) stream.push(eos);
    if (opts.maxTokens !== undefined && stream.length >= opts.maxTokens) break;
  }
  const total = Math.min(stream.length, opts.maxTokens ?? Infinity);
  if (total === 0) throw new GpuIndexError("The profiling text has no tokens");
  const window = Math.min(nCtx, model.nCtx);
  for (let start = 0; start < total; start += window) {
    model.reset();
    model.eval(stream.slice(start, Math.min(start + window, total)));
    opts.onProgress?.(Math.min(start + window, total), total);
  }
  if (calls.some((n) => n !== total)) {
    throw new GpuIndexError(
      `Profiler saw ${calls.join("/")} tokens per layer: expected ${total} (engine hook mismatch)`,
    );
  }
  const activeFraction = counts.map((layer) => {
    let s = 0;
    for (const v of layer) s += v;
    return s / (total * nFf);
  });
  return {
    counts,
    tokens: total,
    source: modelPath,
    activeFraction,
    mode,
    threshold: mode === "gate" ? -Infinity : model.threshold,
  };
}
