/**
 * LLaMA-family forward pass (arch `llama` and `bamboo`; spec model.md §5): pre-norm attention
 * and FFN blocks with RMSNorm, RoPE in normal mode and GQA. GGUF files run the dense FFN
 * (SwiGLU for `llama`, as PowerInfer/llama.cpp do; ReLU·ReLU for `bamboo`); PWRI files run the
 * predictor-driven sparse FFN (ReGLU; ReLU·ReLU for `bamboo`).
 *
 * @module
 */

import type { WeightTensor } from "../backend/backend.ts";
import type { GgufFile } from "../gguf/reader.ts";
import type { ModelConfig } from "./config.ts";
import {
  add,
  attentionBlock,
  type Batch,
  embed,
  type ForwardContext,
  lastRow,
  layerSparseFfn,
} from "./forward.ts";
import type { SparseFfnWeights } from "./sparse.ts";
import { matrix, sparseFfnWeights, stackedRows, vector } from "./weights.ts";

/** Dense FFN tensors: `down · act(gate·f, up·f)`. */
export interface DenseFfnWeights {
  readonly gate: WeightTensor;
  readonly up: WeightTensor;
  readonly down: WeightTensor;
}

/** One decoder block. */
export interface LlamaLayer {
  readonly attnNorm: Float32Array;
  readonly wq: WeightTensor;
  readonly wk: WeightTensor;
  readonly wv: WeightTensor;
  /** wq, wk and wv as one matrix when they are adjacent in the file (one matmul per token). */
  readonly wqkv: WeightTensor | null;
  readonly wo: WeightTensor;
  readonly ffnNorm: Float32Array;
  readonly dense: DenseFfnWeights | null;
  readonly sparse: SparseFfnWeights | null;
}

/** All tensors of a LLaMA-family model. */
export interface LlamaWeights {
  readonly tokenEmbd: WeightTensor;
  readonly layers: readonly LlamaLayer[];
  readonly outputNorm: Float32Array;
  readonly output: WeightTensor;
}

/**
 * Views every tensor of a LLaMA/bamboo file, checking names, shapes and types.
 *
 * @throws {ModelConfigError} If a tensor is missing or has the wrong shape or type.
 */
export function loadLlamaWeights(file: GgufFile, c: ModelConfig): LlamaWeights {
  const layers: LlamaLayer[] = [];
  for (let i = 0; i < c.nLayer; i++) {
    const p = `blk.${i}`;
    let sparse: SparseFfnWeights | null = null;
    let dense: DenseFfnWeights | null = null;
    if (c.sparse) {
      sparse = sparseFfnWeights(file, c, i, true);
    } else {
      dense = {
        gate: matrix(file, `${p}.ffn_gate.weight`, c.nEmbd, c.nFf),
        up: matrix(file, `${p}.ffn_up.weight`, c.nEmbd, c.nFf),
        down: matrix(file, `${p}.ffn_down.weight`, c.nFf, c.nEmbd),
      };
    }
    const wq = matrix(file, `${p}.attn_q.weight`, c.nEmbd, c.nEmbd);
    const wk = matrix(file, `${p}.attn_k.weight`, c.nEmbd, c.nEmbdGqa);
    const wv = matrix(file, `${p}.attn_v.weight`, c.nEmbd, c.nEmbdGqa);
    layers.push({
      attnNorm: vector(file, `${p}.attn_norm.weight`, c.nEmbd),
      wq,
      wk,
      wv,
      wqkv: stackedRows(`${p}.attn_q|k|v`, [wq, wk, wv]),
      wo: matrix(file, `${p}.attn_output.weight`, c.nEmbd, c.nEmbd),
      ffnNorm: vector(file, `${p}.ffn_norm.weight`, c.nEmbd),
      dense,
      sparse,
    });
  }
  return {
    tokenEmbd: matrix(file, "token_embd.weight", c.nEmbd, c.nVocab),
    layers,
    outputNorm: vector(file, "output_norm.weight", c.nEmbd),
    // Tied embeddings: fall back to token_embd when a file has no output matrix.
    output: file.tensor("output.weight")
      ? matrix(file, "output.weight", c.nEmbd, c.nVocab)
      : matrix(file, "token_embd.weight", c.nEmbd, c.nVocab),
  };
}

/**
 * Runs one batch through the model and returns the logits of its last token `[nVocab]`.
 *
 * @param logits Receives the logits.
 */
export function llamaForward(
  ctx: ForwardContext,
  w: LlamaWeights,
  batch: Batch,
  logits: Float32Array,
): void {
  const { backend: be, config: c, scratch: s } = ctx;
  const n = batch.tokens.length;
  let x = embed(ctx, w.tokenEmbd, batch.tokens); // [n, nEmbd]

  for (let l = 0; l < c.nLayer; l++) {
    const L = w.layers[l]!;
    // a = RMSNorm(x)·attn_norm
    const a = s.get("a", n * c.nEmbd);
    be.rmsNorm(a, x, L.attnNorm, c.normEps);
    // x2 = Wo·Attn(rope(Wq·a), rope(Wk·a), Wv·a) + x
    let q: Float32Array, k: Float32Array, v: Float32Array;
    if (n === 1 && L.wqkv) {
      // one token, Q/K/V adjacent in the file: one matmul gives [q | k | v]
      const qkv = s.get("qkv", c.nEmbd + 2 * c.nEmbdGqa);
      be.matmul(qkv, L.wqkv, a, 1);
      q = qkv.subarray(0, c.nEmbd);
      k = qkv.subarray(c.nEmbd, c.nEmbd + c.nEmbdGqa);
      v = qkv.subarray(c.nEmbd + c.nEmbdGqa);
    } else {
      q = s.get("q", n * c.nEmbd);
      k = s.get("k", n * c.nEmbdGqa);
      v = s.get("v", n * c.nEmbdGqa);
      be.matmul(q, L.wq, a, n);
      be.matmul(k, L.wk, a, n);
      be.matmul(v, L.wv, a, n);
    }
    const attn = attentionBlock(ctx, l, batch, q, k, v, L.wo);
    const x2 = add(s.get("x2", n * c.nEmbd), attn, x);
    // f = RMSNorm(x2)·ffn_norm;  x' = FFN(f; predictor on x2) + x2
    const f = s.get("f", n * c.nEmbd);
    be.rmsNorm(f, x2, L.ffnNorm, c.normEps);
    const ffn = L.sparse
      ? layerSparseFfn(ctx, l, L.sparse, f, x2, n, ctx.sparseActivation)
      : denseFfn(ctx, l, L.dense!, f, n);
    x = add(s.get("x", n * c.nEmbd), ffn, x2);
  }

  // logits = output · (RMSNorm(x_last)·output_norm)
  const h = s.get("out_norm", c.nEmbd);
  be.rmsNorm(h, lastRow(x, c.nEmbd), w.outputNorm, c.normEps);
  be.matmul(logits, w.output, h, 1);
}

/** `down · act(gate·f, up·f)`: SiLU·up for llama, ReLU·ReLU for bamboo. */
function denseFfn(
  ctx: ForwardContext,
  layer: number,
  w: DenseFfnWeights,
  f: Float32Array,
  n: number,
): Float32Array {
  const { backend: be, config: c, scratch: s } = ctx;
  const gate = s.get("ffn.gate", n * c.nFf);
  const up = s.get("ffn.up", n * c.nFf);
  be.matmul(gate, w.gate, f, n);
  be.matmul(up, w.up, f, n);
  if (ctx.onFfnActivation) {
    for (let t = 0; t < n; t++) {
      const active = new Uint8Array(c.nFf);
      for (let j = 0; j < c.nFf; j++) active[j] = gate[t * c.nFf + j]! > 0 ? 1 : 0;
      ctx.onFfnActivation(layer, active);
    }
  }
  const act = s.get("ffn.act", n * c.nFf);
  be.activation(act, gate, up, c.arch === "bamboo" ? "relu_relu_mul" : "silu_mul");
  const out = s.get("ffn.out", n * c.nEmbd);
  be.matmul(out, w.down, act, n);
  return out;
}
