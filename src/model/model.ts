/**
 * Loading a model file and running it: {@link loadModel} returns a disposable {@link Model} with
 * `generate()` (an async stream of tokens), `eval()` / `reset()` for teacher forcing and
 * profiling, and `tokenize()` / `detokenize()`.
 *
 * Context policy: the KV cache holds `nCtx` tokens. When a decode would overflow it, `eval()`
 * throws a {@link GenerationError}. `generate()` instead shifts the context like `main`: it keeps
 * the first `nKeep + 1` tokens, drops half of the rest and re-rotates the cached keys of the
 * tokens it moves (`contextShift: false` ends the stream at a full context instead). A prompt
 * longer than `nCtx − 4` tokens is rejected up front, like `main`.
 *
 * A Model keeps all its state (mapping, cache, buffers) in the instance; the only process-wide
 * state is the native library and its thread pool, so a Worker can own a Model of its own.
 *
 * @module
 */

import { CpuBackend } from "../backend/cpu.ts";
import type { Backend, HotFfn, KvType } from "../backend/backend.ts";
import { GenerationError, ModelConfigError } from "../errors.ts";
import { gpuIndexForLoad } from "../gpu_index/policy.ts";
import { openGguf } from "../gguf/open.ts";
import type { GgufFile } from "../gguf/reader.ts";
import { ggmlTypeName } from "../gguf/types.ts";
import { Sampler, type SamplingParams } from "../sampling.ts";

export type { SamplingParams };
import { type Tokenizer, tokenizerFromGguf } from "../tokenizer/tokenizer.ts";
import { type ModelConfig, readModelConfig, sparseThreshold } from "./config.ts";
import { falconForward, type FalconWeights, loadFalconWeights } from "./falcon.ts";
import type { Batch, ForwardContext } from "./forward.ts";
import { KvCache } from "./kv_cache.ts";
import { llamaForward, type LlamaWeights, loadLlamaWeights } from "./llama.ts";
import { Scratch } from "./scratch.ts";

/** Options of {@link loadModel}. */
export interface LoadModelOptions {
  /** CPU threads for the kernels (default: the native default, physical cores). */
  threads?: number;
  /** Threads for prompt batches (`-tb`; default: `threads`). */
  threadsBatch?: number;
  /** Context size in tokens (default 512; 0 = the model's training context). */
  nCtx?: number;
  /** Prompt tokens per decode (default 512). */
  nBatch?: number;
  /** KV cache element type (default "f16", like `main`; "f32" = `--memory-f32`). */
  kvType?: KvType;
  /** Predictor threshold; overrides env `LLAMA_SPARSE_PRED_THRESHOLD` and the file key. */
  sparseThreshold?: number;
  /** RoPE frequency base override (`--rope-freq-base`; default: the file's, else 10000). */
  ropeFreqBase?: number;
  /** RoPE frequency scale override (`--rope-freq-scale`; default: 1 / the file's factor). */
  ropeFreqScale?: number;
  /** Compute backend (default: the CPU kernels). Tests may pass another one. */
  backend?: Backend;
  /** Per-layer hot-neuron masks (1 = hot, skipped on the CPU), from the GPU index. */
  gpuIdx?: readonly (Uint8Array | null)[];
  /** Computes the hot neurons (GPU side); without it every neuron is cold. */
  hot?: HotFfn;
  /** VRAM budget in GiB for the GPU index (ignored, with a warning, without a hot side). */
  vramBudget?: number;
  /** Regenerate the GPU index even if present. */
  resetGpuIndex?: boolean;
  /** Put every FFN neuron on the CPU. */
  disableGpuIndex?: boolean;
  /** Profiler hook: per layer and token, which FFN neurons fired (1) — gate (or up) > 0. */
  onFfnActivation?: (layer: number, active: Uint8Array) => void;
}

/** Options of {@link Model.generate}: sampling plus limits. */
export interface GenerateOptions extends Partial<SamplingParams> {
  /** Tokens to generate at most (default 128; −1 = until EOS or the context is full). */
  maxTokens?: number;
  /** Keep going when EOS is sampled (its logit is set to −∞ as `--ignore-eos` does). */
  ignoreEos?: boolean;
  /** Add BOS when tokenizing a string prompt (default: the vocabulary's setting). */
  addBos?: boolean;
  /** Stops generation; the stream then throws `signal.reason`. */
  signal?: AbortSignal;
  /** Added to the logits of these token ids before sampling (`-l ID+B`); −Infinity bans one. */
  logitBias?: Readonly<Record<number, number>>;
  /**
   * Stop strings: generation ends when the text contains one; the text from the stop string on
   * is not returned, and text that could start one is held back until it cannot.
   */
  stop?: readonly string[];
  /** When the context is full: shift it (default true, like `main`) or end the stream. */
  contextShift?: boolean;
  /** Prompt tokens kept (after BOS) by a context shift; −1 = the whole prompt (default 0). */
  nKeep?: number;
}

/**
 * One generated token and its text (UTF-8 pieces may be held back until complete). A last
 * item with id −1 carries text still pending when the stream ends (an incomplete sequence).
 */
export interface GeneratedToken {
  /** The sampled token id (−1 for trailing text only). */
  readonly id: number;
  /** Text that became complete with this token (may be ""). */
  readonly text: string;
}

/** Accumulated timings, in the terms of `llama_print_timings` (cli.md). */
export interface ModelTimings {
  /** From opening the file to a ready model. */
  loadMs: number;
  /** Time spent sampling, and how many tokens were sampled. */
  sampleMs: number;
  /** Tokens sampled. */
  sampleRuns: number;
  /** Time in decodes of more than one token (prompt batches). */
  promptEvalMs: number;
  /** Tokens in those decodes. */
  promptTokens: number;
  /** Time in single-token decodes. */
  evalMs: number;
  /** Single-token decodes. */
  evalRuns: number;
}

type Weights = { arch: "llama"; w: LlamaWeights } | { arch: "falcon"; w: FalconWeights };

const DEFAULT_N_CTX = 512;
const DEFAULT_N_BATCH = 512;

/**
 * A loaded model with its KV cache. Dispose it (or `using`) to unmap the file; every method
 * then throws a {@link GenerationError}. One generation runs at a time per model: a second
 * `generate()` (or `eval()` / `reset()`) while one is being iterated throws instead of mixing
 * their contexts. Create one with {@link loadModel}.
 *
 * @example Load, generate greedily, dispose
 * ```ts ignore
 * import { equal, ok } from "node:assert/strict";
 * import { loadModel } from "@powerinfer/deno";
 * {
 *   using model = loadModel("assets/fortune-relu.q4.powerinfer.gguf", { nCtx: 64 });
 *   let text = "";
 *   for await (const t of model.generate("A", { maxTokens: 8, temperature: 0 })) text += t.text;
 *   ok(text.startsWith(" man is a"));
 *   equal(model.tokens.length, 2 + 8 - 1); // prompt + generated (the last is not decoded)
 * }
 * ```
 */
export class Model implements Disposable {
  /** The model file. */
  readonly path: string;
  /** Hyperparameters read from the file (with RoPE overrides applied). */
  readonly config: ModelConfig;
  /** The vocabulary of the file. */
  readonly tokenizer: Tokenizer;
  /** Context size in tokens (KV cache cells). */
  readonly nCtx: number;
  /** Prompt tokens per decode. */
  readonly nBatch: number;
  /** Predictor threshold in use (sparse models). */
  readonly threshold: number;
  /** Accumulated timings since load (like `llama_print_timings`). */
  readonly timings: ModelTimings;
  #file: GgufFile;
  #weights: Weights;
  #ctx: ForwardContext;
  #cache: KvCache;
  #scratch: Scratch;
  #backend: Backend;
  #logits: Float32Array;
  #tokens: number[] = [];
  #busy = false;
  #closed = false;

  /** @internal Use {@link loadModel}. */
  constructor(path: string, file: GgufFile, options: LoadModelOptions, t0: number) {
    this.path = path;
    this.#file = file;
    if (file.kind === "powerinfer-gpu-index") {
      throw new ModelConfigError(
        `File "${path}" is a GPU-index file, not a model: pass the model file itself`,
      );
    }
    if (file.tensors.length === 0) {
      throw new ModelConfigError(
        `File "${path}" holds no tensors (a vocabulary-only GGUF?): expected model weights`,
      );
    }
    const fileConfig = readModelConfig(file);
    const c: ModelConfig = {
      ...fileConfig,
      ropeFreqBase: options.ropeFreqBase ?? fileConfig.ropeFreqBase,
      ropeFreqScale: options.ropeFreqScale ?? fileConfig.ropeFreqScale,
    };
    const positive = (v: number) => Number.isFinite(v) && v > 0;
    if (!positive(c.ropeFreqBase) || !positive(c.ropeFreqScale)) {
      throw new RangeError(
        `RoPE base ${c.ropeFreqBase} and scale ${c.ropeFreqScale} must be finite numbers > 0`,
      );
    }
    this.config = c;
    this.tokenizer = tokenizerFromGguf(file);
    this.#weights = c.arch === "falcon"
      ? { arch: "falcon", w: loadFalconWeights(file, c) }
      : { arch: "llama", w: loadLlamaWeights(file, c) };
    const nCtx = options.nCtx === 0 ? c.nCtxTrain : options.nCtx ?? DEFAULT_N_CTX;
    if (!Number.isInteger(nCtx) || nCtx < 1) {
      throw new RangeError(`nCtx must be >= 1, found ${nCtx}`);
    }
    this.nCtx = nCtx;
    const nBatch = options.nBatch ?? DEFAULT_N_BATCH;
    if (!Number.isInteger(nBatch) || nBatch < 1) {
      throw new RangeError(`nBatch must be >= 1, found ${nBatch}`);
    }
    this.nBatch = nBatch;
    this.threshold = options.sparseThreshold ??
      sparseThreshold(c.fileSparseThreshold, envThreshold());
    // Hot-neuron masks: explicit ones, else the GPU-index policy (only with a hot side).
    const gpuIdx = c.sparse
      ? gpuIndexForLoad(path, file, { ...options, nCtx, nBatch }, (line) => console.error(line))
      : null;
    if (gpuIdx) {
      if (gpuIdx.length !== c.nLayer) {
        throw new ModelConfigError(`GPU index has ${gpuIdx.length} layers: expected ${c.nLayer}`);
      }
      for (const m of gpuIdx) {
        if (m && m.length !== c.nFf) {
          throw new ModelConfigError(`GPU index mask has ${m.length} neurons: expected ${c.nFf}`);
        }
      }
    }
    this.#backend = options.backend ?? new CpuBackend({
      threads: options.threads,
      threadsBatch: options.threadsBatch,
    });
    this.#cache = new KvCache(options.kvType ?? "f16", nCtx, c.nLayer, c.nEmbdGqa);
    this.#scratch = new Scratch();
    this.#logits = new Float32Array(c.nVocab);
    this.#ctx = {
      backend: this.#backend,
      config: c,
      cache: this.#cache,
      scratch: this.#scratch,
      threshold: this.threshold,
      gpuIdx,
      // No masks (disabled, no budget, dense) means no split: the hot side must not add anything.
      hot: gpuIdx ? options.hot ?? null : null,
      sparseActivation: c.arch === "bamboo" ? "relu_relu_mul" : "relu_mul",
      onFfnActivation: options.onFfnActivation,
    };
    this.timings = {
      loadMs: performance.now() - t0,
      sampleMs: 0,
      sampleRuns: 0,
      promptEvalMs: 0,
      promptTokens: 0,
      evalMs: 0,
      evalRuns: 0,
    };
  }

  /** Tokens currently in the context (prompt and generated). */
  get tokens(): readonly number[] {
    return this.#tokens;
  }

  /** Bytes of the KV cache plus the work buffers now held. */
  get memoryBytes(): { kvCache: number; scratch: number; weights: number } {
    return {
      kvCache: this.#cache.byteLength,
      scratch: this.#scratch.byteLength + this.#logits.byteLength,
      weights: this.#file.tensors.reduce((a, t) => a + t.byteLength, 0),
    };
  }

  /**
   * Text to token ids with this model's vocabulary. Unlike PowerInfer's `main`, SentencePiece
   * vocabularies get the leading dummy-prefix space by default (as SentencePiece and HF do);
   * pass `dummyPrefix: false` to reproduce `main`'s ids.
   *
   * @param text The text to encode.
   * @param opts `addBos` (default: the vocabulary's setting), `parseSpecial` (default false),
   * `dummyPrefix` (default true).
   * @returns Token ids, BOS first when added.
   * @throws {TokenizerError} If the text cannot be encoded with this vocabulary.
   *
   * @example With and without the SentencePiece leading space
   * ```ts ignore
   * import { deepStrictEqual } from "node:assert/strict";
   * import { loadModel } from "@powerinfer/deno";
   * using model = loadModel("assets/fortune-relu.q4.powerinfer.gguf");
   * deepStrictEqual(model.tokenize("A"), [1, 319]);
   * deepStrictEqual(model.tokenize("A", { dummyPrefix: false }), [1, 970]); // like main
   * ```
   */
  tokenize(
    text: string,
    opts: { addBos?: boolean; parseSpecial?: boolean; dummyPrefix?: boolean } = {},
  ): number[] {
    return this.tokenizer.encode(text, { ...opts, dummyPrefix: opts.dummyPrefix ?? true });
  }

  /**
   * Token ids to text (BOS/EOS and other control tokens give no text; the SentencePiece leading
   * space of the first piece is removed).
   *
   * @param ids Token ids of this vocabulary.
   * @returns The decoded text (invalid UTF-8 becomes U+FFFD).
   * @throws {RangeError} If an id is outside the vocabulary.
   *
   * @example Round trip
   * ```ts ignore
   * import { equal } from "node:assert/strict";
   * import { loadModel } from "@powerinfer/deno";
   * using model = loadModel("assets/fortune-relu.q4.powerinfer.gguf");
   * equal(model.detokenize(model.tokenize("A man")), "A man");
   * ```
   */
  detokenize(ids: readonly number[]): string {
    this.#checkIds(ids);
    return this.tokenizer.decode(ids);
  }

  /**
   * Empties the context (the KV cache), so the next {@link eval} starts at position 0.
   *
   * @throws {GenerationError} If the model is closed or a generation is running.
   *
   * @example The same prompt twice gives the same logits
   * ```ts ignore
   * import { deepStrictEqual, equal } from "node:assert/strict";
   * import { loadModel } from "@powerinfer/deno";
   * using model = loadModel("assets/fortune-relu.q4.powerinfer.gguf", { nCtx: 16 });
   * const first = model.eval([1, 319]);
   * model.reset();
   * equal(model.tokens.length, 0);
   * deepStrictEqual(model.eval([1, 319]), first);
   * ```
   */
  reset(): void {
    this.#assertOpen();
    if (this.#busy) throw new GenerationError("reset() cannot run while generate() is running");
    this.#clear();
  }

  #clear(): void {
    this.#cache.clear();
    this.#tokens = [];
  }

  /**
   * Appends tokens to the context and returns the logits of the last one. Tokens are decoded
   * in batches of `nBatch` (matrix-matrix), positions continuing from the context.
   *
   * @param ids Token ids (at least one).
   * @returns A fresh copy of the last token's logits `[nVocab]`.
   * @throws {GenerationError} If the tokens do not fit in the context, the model is closed or a
   * generation is running.
   * @throws {RangeError} If `ids` is empty or an id is outside the vocabulary.
   *
   * @example Teacher forcing: feed a token, read the next-token logits
   * ```ts ignore
   * import { equal } from "node:assert/strict";
   * import { loadModel } from "@powerinfer/deno";
   * using model = loadModel("assets/fortune-relu.q4.powerinfer.gguf", { nCtx: 16 });
   * const logits = model.eval([1, 319]); // BOS, " A"
   * equal(logits.length, model.config.nVocab);
   * const next = logits.indexOf(Math.max(...logits));
   * equal(model.eval([next]).length, 1024);
   * equal(model.tokens.length, 3);
   * ```
   */
  eval(ids: readonly number[]): Float32Array {
    this.#assertOpen();
    if (this.#busy) throw new GenerationError("eval() cannot run while generate() is running");
    return this.#eval(ids);
  }

  #eval(ids: readonly number[]): Float32Array {
    if (ids.length === 0) throw new RangeError("eval() needs at least one token");
    this.#checkIds(ids);
    if (this.#tokens.length + ids.length > this.nCtx) {
      throw new GenerationError(
        `Context is full: ${this.#tokens.length} + ${ids.length} tokens exceed nCtx ${this.nCtx}`,
      );
    }
    for (let i = 0; i < ids.length; i += this.nBatch) this.#decode(ids.slice(i, i + this.nBatch));
    return this.#logits.slice();
  }

  #checkIds(ids: readonly number[]): void {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.config.nVocab) {
        throw new RangeError(`Token id ${id} is outside the vocabulary [0, ${this.config.nVocab})`);
      }
    }
  }

  #decode(ids: readonly number[]): void {
    const t0 = performance.now();
    const n = ids.length;
    const start = this.#tokens.length;
    const positions = Int32Array.from({ length: n }, (_, i) => start + i);
    const { slots, nKv } = this.#cache.reserve(positions);
    const batch: Batch = { tokens: Int32Array.from(ids), positions, slots, nKv };
    try {
      if (this.#weights.arch === "falcon") {
        falconForward(this.#ctx, this.#weights.w, batch, this.#logits);
      } else llamaForward(this.#ctx, this.#weights.w, batch, this.#logits);
    } catch (error) {
      this.#cache.release(n);
      throw error;
    }
    this.#tokens.push(...ids);
    const ms = performance.now() - t0;
    if (n > 1) {
      this.timings.promptEvalMs += ms;
      this.timings.promptTokens += n;
    } else {
      this.timings.evalMs += ms;
      this.timings.evalRuns += 1;
    }
  }

  /**
   * Makes room in a full context like `main`: keeps the first `nKeep + 1` tokens, drops half of
   * the tokens after them and moves the rest down, re-rotating their cached keys by the shift
   * (results rounded back to the cache type).
   *
   * @param nKeep Tokens kept after the first one.
   * @returns How many tokens were dropped.
   * @throws {GenerationError} If nothing can be dropped.
   */
  shiftContext(nKeep = 0): number {
    this.#assertOpen();
    if (this.#busy) {
      throw new GenerationError("shiftContext() cannot run while generate() is running");
    }
    return this.#shift(nKeep);
  }

  #shift(nKeep: number): number {
    const nPast = this.#tokens.length;
    const nDiscard = Math.floor((nPast - nKeep - 1) / 2);
    if (nKeep < 0 || nDiscard <= 0) {
      throw new GenerationError(`Cannot shift a context of ${nPast} tokens keeping ${nKeep}`);
    }
    const c = this.config;
    const { start, nMoved } = this.#cache.discard(nKeep + 1, nDiscard);
    const delta = new Int32Array(nMoved).fill(-nDiscard);
    for (const layer of this.#cache.layers) {
      const k = layer.k.subarray(start * c.nEmbdGqa, (start + nMoved) * c.nEmbdGqa);
      const f16 = k instanceof Uint16Array
        ? new Float16Array(k.buffer, k.byteOffset, k.length)
        : null;
      const x = f16 ? Float32Array.from(f16) : k as Float32Array;
      this.#backend.rope(
        x,
        nMoved,
        c.nHeadKv,
        c.headDim,
        c.nRot,
        delta,
        c.ropeMode,
        c.ropeFreqBase,
        c.ropeFreqScale,
      );
      if (f16) f16.set(x); // rounds to nearest even, like the fp16 cache store
    }
    this.#tokens.splice(start, nDiscard);
    return nDiscard;
  }

  /**
   * Generates tokens after a prompt, streaming them as they are made. The context is reset
   * first; the prompt (a string, tokenized with BOS for SentencePiece vocabularies, or ids) is
   * decoded as one batch, then one token per step. Stops after `maxTokens` or at EOS (unless
   * `ignoreEos`); a full context is shifted (or ends the stream with `contextShift: false`).
   *
   * @param prompt Text or token ids. An empty prompt becomes `[BOS]`.
   * @param options Sampling ({@link SamplingParams}), `maxTokens`, `ignoreEos`, `signal`,
   * `logitBias`, `stop`, `contextShift`, `nKeep`.
   * @returns An async iterable of `{ id, text }`; the work starts at the first `next()`.
   * @throws {GenerationError} (from the first `next()`) If the prompt does not fit in
   * `nCtx − 4` tokens, another generation is running on this model, or the model was closed
   * (also when `close()` runs while the stream is suspended).
   * @throws {RangeError} If a prompt id is outside the vocabulary, or `maxTokens` / `nKeep` is
   * not an integer >= -1.
   * @throws The signal's reason when aborted (checked before every token; no token is decoded
   * after it fires).
   *
   * @example Greedy continuation, stopped by an AbortSignal
   * ```ts ignore
   * import { equal, ok, rejects } from "node:assert/strict";
   * import { loadModel } from "@powerinfer/deno";
   * using model = loadModel("assets/fortune-relu.q4.powerinfer.gguf", { nCtx: 64 });
   * let text = "";
   * for await (const t of model.generate("A", { maxTokens: 8, temperature: 0 })) text += t.text;
   * ok(text.startsWith(" man is a"));
   * const stop = new AbortController();
   * let n = 0;
   * await rejects(async () => {
   *   for await (const _ of model.generate("A", { signal: stop.signal })) {
   *     if (++n === 2) stop.abort();
   *   }
   * });
   * equal(n, 2);
   * ```
   */
  async *generate(
    prompt: string | readonly number[],
    options: GenerateOptions = {},
  ): AsyncGenerator<GeneratedToken, void, undefined> {
    this.#assertOpen();
    if (this.#busy) {
      throw new GenerationError(
        "Another generation is running on this model: finish it, break out of its loop or " +
          "call its return() first (or load a second Model)",
      );
    }
    const {
      maxTokens = 128,
      ignoreEos = false,
      addBos,
      signal,
      contextShift = true,
      nKeep: keepOption = 0,
      logitBias = {},
      stop = [],
      ...sampling
    } = options;
    if (!Number.isInteger(maxTokens) || maxTokens < -1) {
      throw new RangeError(`maxTokens must be an integer >= -1, found ${maxTokens}`);
    }
    if (!Number.isInteger(keepOption) || keepOption < -1) {
      throw new RangeError(`nKeep must be an integer >= -1, found ${keepOption}`);
    }
    let ids = typeof prompt === "string"
      ? this.tokenize(prompt, { addBos, parseSpecial: true })
      : [...prompt];
    if (ids.length === 0) ids = [this.tokenizer.bosId];
    if (ids.length > this.nCtx - 4) {
      throw new GenerationError(
        `Prompt has ${ids.length} tokens: at most nCtx - 4 = ${this.nCtx - 4} fit`,
      );
    }
    signal?.throwIfAborted();
    this.#busy = true;
    using pause = signal ? new EventLoopYield() : undefined;
    try {
      const sampler = new Sampler(sampling);
      this.#clear();
      for (const id of ids) sampler.accept(id);
      let logits = this.#eval(ids);
      // The pieces continue the prompt: keep their leading spaces (main prints raw pieces).
      const decoder = this.tokenizer.createStreamDecoder({ stripLeadingSpace: false });
      const eos = this.tokenizer.eosId;
      const stops = new StopMatcher(stop);
      for (let made = 0; maxTokens < 0 || made < maxTokens; made++) {
        if (signal) {
          await pause!.next(); // lets a timer or an event abort us between tokens
          signal.throwIfAborted();
        }
        const t0 = performance.now();
        for (const [id, bias] of Object.entries(logitBias)) {
          const i = Number(id);
          if (i >= 0 && i < logits.length) logits[i] = logits[i]! + bias;
        }
        if (ignoreEos && eos >= 0 && eos < logits.length) logits[eos] = -Infinity;
        const id = sampler.sample(logits);
        sampler.accept(id);
        this.timings.sampleMs += performance.now() - t0;
        this.timings.sampleRuns += 1;
        if (id === eos && !ignoreEos) {
          // EOS is reported (like main's output_tokens) with whatever text was pending.
          yield { id, text: stops.end(decoder.flush()) };
          return;
        }
        const piece = stops.push(decoder.push(id));
        yield { id, text: piece.text };
        if (piece.stopped) return;
        if (maxTokens >= 0 && made + 1 >= maxTokens) break;
        if (this.#tokens.length >= this.nCtx) {
          if (!contextShift) break;
          const nKeep = keepOption < 0 || keepOption > ids.length ? ids.length : keepOption;
          this.#shift(nKeep);
        }
        signal?.throwIfAborted();
        // close() may have run while we were suspended: the weights are unmapped then
        this.#assertOpen("during generate()");
        logits = this.#eval([id]);
      }
      const rest = stops.end(decoder.flush());
      if (rest) yield { id: -1, text: rest };
    } finally {
      this.#busy = false;
      if (signal?.aborted) this.#scratch.clear();
    }
  }

  /**
   * A one-screen description: architecture, sizes, types, sparse or dense, memory.
   *
   * @returns About a dozen `label: value` lines.
   */
  summary(): string {
    const c = this.config;
    const types = new Map<string, number>();
    for (const t of this.#file.tensors) {
      const name = ggmlTypeName(t.type);
      types.set(name, (types.get(name) ?? 0) + 1);
    }
    const mem = this.memoryBytes;
    const mib = (n: number) => `${(n / 1048576).toFixed(2)} MiB`;
    const lines = [
      `model:       ${this.path}`,
      `format:      ${this.#file.magic} v${this.#file.version} (${
        c.sparse ? "sparse, predictor-driven FFN" : "dense FFN"
      })`,
      `arch:        ${c.arch}${c.sparse ? ` (sparse threshold ${this.threshold.toFixed(2)})` : ""}`,
      `vocab:       ${c.nVocab} (${this.tokenizer.kind})`,
      `layers:      ${c.nLayer}, n_embd ${c.nEmbd}, n_ff ${c.nFf}`,
      `heads:       ${c.nHead} (kv ${c.nHeadKv}), head dim ${c.headDim}, rope ${
        c.ropeMode === 2 ? "neox" : "normal"
      } base ${c.ropeFreqBase}`,
      `tensors:     ${this.#file.tensors.length} (${
        [...types].map(([k, v]) => `${k} ${v}`).join(", ")
      })`,
      `context:     ${this.nCtx} (trained ${c.nCtxTrain}), batch ${this.nBatch}`,
      `memory:      weights ${mib(mem.weights)} (mapped), KV cache ${
        mib(mem.kvCache)
      } (${this.#cache.type})`,
      `backend:     ${this.#backend.name}`,
      ...(c.sparse ? [`ffn split:   ${this.#splitSummary()}`] : []),
    ];
    return lines.join("\n");
  }

  #splitSummary(): string {
    const masks = this.#ctx.gpuIdx;
    if (!masks || !this.#ctx.hot) return "every neuron cold (CPU)";
    let hot = 0;
    for (const m of masks) if (m) { for (const v of m) hot += v; }
    const total = this.config.nLayer * this.config.nFf;
    return `${hot} of ${total} neurons hot (${
      ((100 * hot) / total).toFixed(1)
    }%), the rest on the CPU`;
  }

  /**
   * Unmaps the file and drops the buffers (idempotent). A generation suspended at a token
   * throws a {@link GenerationError} when resumed.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#scratch.clear();
    this.#file.close();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #assertOpen(when = ""): void {
    if (this.#closed) throw new GenerationError(`The model was closed${when ? ` ${when}` : ""}`);
  }
}

function envThreshold(): string | undefined {
  try {
    return Deno.env.get("LLAMA_SPARSE_PRED_THRESHOLD");
  } catch {
    return undefined; // no --allow-env: behave as unset
  }
}

/** Finds stop strings in streamed text, holding back what could be the start of one. */
class StopMatcher {
  #stops: readonly string[];
  #held = "";

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((x) => x.length > 0);
  }

  /** Adds text; returns what can be released and whether a stop string was found. */
  push(text: string): { text: string; stopped: boolean } {
    if (this.#stops.length === 0) return { text, stopped: false };
    const all = this.#held + text;
    let cut = -1;
    for (const stop of this.#stops) {
      const i = all.indexOf(stop);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.#held = "";
      return { text: all.slice(0, cut), stopped: true };
    }
    let keep = 0; // longest suffix of `all` that is a proper prefix of a stop string
    for (const stop of this.#stops) {
      for (let n = Math.min(stop.length - 1, all.length); n > keep; n--) {
        if (all.endsWith(stop.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.#held = all.slice(all.length - keep);
    return { text: all.slice(0, all.length - keep), stopped: false };
  }

  /** The stream ended: releases what was held (up to a stop string, if one completes). */
  end(text: string): string {
    const r = this.push(text);
    const out = r.text + (r.stopped ? "" : this.#held);
    this.#held = "";
    return out;
  }
}

/**
 * Yields to the event loop (timers, I/O, abort events) without setTimeout's clamping: a
 * message posted to ourselves is a macrotask that runs as soon as the loop gets to it.
 */
class EventLoopYield implements Disposable {
  #channel = new MessageChannel();
  #resolve: (() => void) | undefined;

  constructor() {
    this.#channel.port1.onmessage = () => this.#resolve?.();
  }

  next(): Promise<void> {
    return new Promise((resolve) => {
      this.#resolve = resolve;
      this.#channel.port2.postMessage(0);
    });
  }

  [Symbol.dispose](): void {
    this.#channel.port1.close();
    this.#channel.port2.close();
  }
}

/**
 * Opens a GGUF (dense) or PWRI (sparse) model file and prepares it for generation.
 *
 * @param path Model file.
 * @param options Threads, context size, KV type, GPU-index placeholders, profiler hook.
 * @returns The model (synchronously: the weights are mapped, not read); dispose it when done.
 * @throws {ModelConfigError} If the hyperparameters or tensors are missing or inconsistent, or
 * the file is a GPU index or a vocabulary-only GGUF.
 * @throws {TokenizerError} If the vocabulary is missing or inconsistent.
 * @throws {MappedFileError} If the file cannot be opened.
 * @throws {GgufFormatError} If the file is not GGUF/PWRI or is truncated.
 * @throws {RangeError} If an option is out of range or the KV cache for `nCtx` cannot be
 * allocated (the message names the bytes needed).
 *
 * @example Load, evaluate, dispose at the end of the scope
 * ```ts ignore
 * import { equal, throws } from "node:assert/strict";
 * import { loadModel, type Model } from "@powerinfer/deno";
 * let kept: Model;
 * {
 *   using model = loadModel("assets/fortune-relu.q4.powerinfer.gguf", { nCtx: 256 });
 *   equal(model.eval([1, 450]).length, model.config.nVocab);
 *   kept = model;
 * }
 * throws(() => kept.eval([1]), /The model was closed/);
 * ```
 */
export function loadModel(path: string, options: LoadModelOptions = {}): Model {
  const t0 = performance.now();
  const file = openGguf(path);
  try {
    return new Model(path, file, options, t0);
  } catch (error) {
    file.close();
    throw error;
  }
}
