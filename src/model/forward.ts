/**
 * What every architecture's forward pass shares: the run context, the token-embedding lookup,
 * cached causal self-attention with its output projection, the sparse FFN with the run's
 * predictor settings, and the residual add.
 *
 * @module
 */

import type {
  ActivationKind,
  Backend,
  HotFfn,
  SparseFfnWeights,
  WeightTensor,
} from "../backend/backend.ts";
import type { ModelConfig } from "./config.ts";
import type { KvCache } from "./kv_cache.ts";
import type { Scratch } from "./scratch.ts";
import { sparseFfn } from "./sparse.ts";
import { dequantizeRow } from "./weights.ts";

/** Everything a forward pass reads besides the weights. */
export interface ForwardContext {
  readonly backend: Backend;
  readonly config: ModelConfig;
  readonly cache: KvCache;
  readonly scratch: Scratch;
  /** Predictor threshold T (model.md §6.2). */
  readonly threshold: number;
  /** Per-layer hot-neuron masks, or null when everything runs on the CPU. */
  readonly gpuIdx: readonly (Uint8Array | null)[] | null;
  readonly hot: HotFfn | null;
  readonly sparseActivation: ActivationKind;
  readonly onFfnActivation?: (layer: number, active: Uint8Array) => void;
}

/** One decode: tokens at positions, written into the cache cells `slots`. */
export interface Batch {
  readonly tokens: Int32Array;
  readonly positions: Int32Array;
  readonly slots: Int32Array;
  /** Cells to attend (model.md §1). */
  readonly nKv: number;
}

/** `x_t = token_embd[id_t]` as f32 rows `[nTokens, nEmbd]`. */
export function embed(
  ctx: ForwardContext,
  tokenEmbd: WeightTensor,
  tokens: Int32Array,
): Float32Array {
  const nEmbd = ctx.config.nEmbd;
  const x = ctx.scratch.get("x", tokens.length * nEmbd);
  for (let t = 0; t < tokens.length; t++) {
    dequantizeRow(tokenEmbd, tokens[t]!, x.subarray(t * nEmbd, (t + 1) * nEmbd));
  }
  return x;
}

/**
 * RoPE on q and k, store k and v in the cache, then `softmax(K·q/√hd + M)·V` per head.
 *
 * @param q `[nTokens, nEmbd]`, rotated in place.
 * @param k `[nTokens, nEmbdGqa]`, rotated in place.
 * @param v `[nTokens, nEmbdGqa]`.
 * @returns The concatenated heads `[nTokens, nEmbd]` (before the output projection).
 */
export function selfAttention(
  ctx: ForwardContext,
  layer: number,
  batch: Batch,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
): Float32Array {
  const { backend, config: c, cache } = ctx;
  const n = batch.tokens.length;
  const rope = (x: Float32Array, nHeads: number) =>
    backend.rope(
      x,
      n,
      nHeads,
      c.headDim,
      c.nRot,
      batch.positions,
      c.ropeMode,
      c.ropeFreqBase,
      c.ropeFreqScale,
    );
  rope(q, c.nHead);
  rope(k, c.nHeadKv);
  const kv = cache.layers[layer]!;
  backend.kvStore(kv, k, v, n, batch.slots);
  const out = ctx.scratch.get("attn.heads", n * c.nEmbd);
  backend.attention(out, {
    q,
    layer: kv,
    nKv: batch.nKv,
    nTokens: n,
    nHead: c.nHead,
    nHeadKv: c.nHeadKv,
    headDim: c.headDim,
    queryPositions: batch.positions,
    cellPositions: cache.cellPositions.subarray(0, batch.nKv),
    scale: Math.fround(1 / Math.fround(Math.sqrt(c.headDim))), // f32 1/sqrtf(hd)
  });
  return out;
}

/**
 * {@link selfAttention} followed by the output projection: `Wo · heads`.
 *
 * @returns `[nTokens, nEmbd]` (scratch "attn").
 */
export function attentionBlock(
  ctx: ForwardContext,
  layer: number,
  batch: Batch,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  wo: WeightTensor,
): Float32Array {
  const n = batch.tokens.length;
  const heads = selfAttention(ctx, layer, batch, q, k, v);
  const attn = ctx.scratch.get("attn", n * ctx.config.nEmbd);
  ctx.backend.matmul(attn, wo, heads, n);
  return attn;
}

/**
 * The predictor-driven sparse FFN of one layer (model.md §6) with this run's threshold,
 * hot/cold split and profiler hook.
 *
 * @param f The FFN input `[nTokens, nEmbd]` (normalised).
 * @param z The predictor input `[nTokens, nEmbd]` (the un-normalised residual).
 * @returns `[nTokens, nEmbd]`.
 */
export function layerSparseFfn(
  ctx: ForwardContext,
  layer: number,
  w: SparseFfnWeights,
  f: Float32Array,
  z: Float32Array,
  nTokens: number,
  activation: ActivationKind,
): Float32Array {
  return sparseFfn(ctx.backend, w, f, z, {
    layer,
    nTokens,
    threshold: ctx.threshold,
    gpuIdx: ctx.gpuIdx?.[layer] ?? null,
    hot: ctx.hot,
    activation,
    onActivation: ctx.onFfnActivation,
  }, ctx.scratch);
}

/** `out[i] = a[i] + b[i]` in f32. */
export function add(out: Float32Array, a: Float32Array, b: Float32Array): Float32Array {
  for (let i = 0; i < out.length; i++) out[i] = a[i]! + b[i]!;
  return out;
}

/** The last row of `[nTokens, n]`. */
export function lastRow(x: Float32Array, n: number): Float32Array {
  return x.subarray(x.length - n);
}
