/**
 * Falcon forward pass (ReluFalcon; spec model.md §5): attention and MLP in parallel from the
 * same residual, LayerNorm with bias (a second one, attn_norm_2, for the 40B layout), fused QKV,
 * NeoX RoPE, GQA, and the predictor-driven sparse ReLU FFN. Dense Falcon does not run in
 * PowerInfer either (its graph needs ffn_down_t), so only PWRI files are accepted.
 *
 * @module
 */

import type { WeightTensor } from "../backend/backend.ts";
import { ModelConfigError } from "../errors.ts";
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
import { matrix, optionalVector, sparseFfnWeights, vector } from "./weights.ts";

/** One Falcon block. */
export interface FalconLayer {
  /** LayerNorm feeding the MLP (HF `ln_mlp`), and the attention when attnNorm2 is absent. */
  readonly attnNorm: Float32Array;
  readonly attnNormB: Float32Array;
  /** LayerNorm feeding the attention (HF `ln_attn`, 40B layout). */
  readonly attnNorm2: Float32Array | null;
  readonly attnNorm2B: Float32Array | null;
  /** `[nEmbd + 2·nEmbdGqa, nEmbd]`: all q heads, then k heads, then v heads. */
  readonly wqkv: WeightTensor;
  readonly wo: WeightTensor;
  readonly ffn: SparseFfnWeights;
}

/** All tensors of a Falcon model. */
export interface FalconWeights {
  readonly tokenEmbd: WeightTensor;
  readonly layers: readonly FalconLayer[];
  readonly outputNorm: Float32Array;
  readonly outputNormB: Float32Array;
  readonly output: WeightTensor;
}

/**
 * Views every tensor of a Falcon PWRI file, checking names, shapes and types.
 *
 * @throws {ModelConfigError} If the file is dense or a tensor is missing or mis-shaped.
 */
export function loadFalconWeights(file: GgufFile, c: ModelConfig): FalconWeights {
  if (!c.sparse) {
    throw new ModelConfigError(
      `Dense Falcon files are not supported: expected a PowerInfer (PWRI) file with ffn_down_t`,
    );
  }
  const layers: FalconLayer[] = [];
  for (let i = 0; i < c.nLayer; i++) {
    const p = `blk.${i}`;
    const attnNorm2 = optionalVector(file, `${p}.attn_norm_2.weight`, c.nEmbd) ?? null;
    layers.push({
      attnNorm: vector(file, `${p}.attn_norm.weight`, c.nEmbd),
      attnNormB: vector(file, `${p}.attn_norm.bias`, c.nEmbd),
      attnNorm2,
      attnNorm2B: attnNorm2 ? vector(file, `${p}.attn_norm_2.bias`, c.nEmbd) : null,
      wqkv: matrix(file, `${p}.attn_qkv.weight`, c.nEmbd, c.nEmbd + 2 * c.nEmbdGqa),
      wo: matrix(file, `${p}.attn_output.weight`, c.nEmbd, c.nEmbd),
      ffn: sparseFfnWeights(file, c, i, false),
    });
  }
  return {
    tokenEmbd: matrix(file, "token_embd.weight", c.nEmbd, c.nVocab),
    layers,
    outputNorm: vector(file, "output_norm.weight", c.nEmbd),
    outputNormB: vector(file, "output_norm.bias", c.nEmbd),
    output: matrix(file, "output.weight", c.nEmbd, c.nVocab),
  };
}

/** Runs one batch and writes the logits of its last token `[nVocab]` into `logits`. */
export function falconForward(
  ctx: ForwardContext,
  w: FalconWeights,
  batch: Batch,
  logits: Float32Array,
): void {
  const { backend: be, config: c, scratch: s } = ctx;
  const n = batch.tokens.length;
  let x = embed(ctx, w.tokenEmbd, batch.tokens); // [n, nEmbd]

  for (let l = 0; l < c.nLayer; l++) {
    const L = w.layers[l]!;
    // n1 = LN(x)·attn_norm + b;  n2 = LN(x)·attn_norm_2 + b2 (or n1)
    const n1 = s.get("n1", n * c.nEmbd);
    be.layerNorm(n1, x, L.attnNorm, L.attnNormB, c.normEps);
    let n2 = n1;
    if (L.attnNorm2) {
      n2 = s.get("n2", n * c.nEmbd);
      be.layerNorm(n2, x, L.attnNorm2, L.attnNorm2B, c.normEps);
    }
    // A = Wo·Attn(qkv = Wqkv·n2), NeoX RoPE
    const nQkv = c.nEmbd + 2 * c.nEmbdGqa;
    const qkv = s.get("qkv", n * nQkv);
    be.matmul(qkv, L.wqkv, n2, n);
    const q = s.get("q", n * c.nEmbd);
    const k = s.get("k", n * c.nEmbdGqa);
    const v = s.get("v", n * c.nEmbdGqa);
    for (let t = 0; t < n; t++) {
      const row = qkv.subarray(t * nQkv, (t + 1) * nQkv);
      q.set(row.subarray(0, c.nEmbd), t * c.nEmbd);
      k.set(row.subarray(c.nEmbd, c.nEmbd + c.nEmbdGqa), t * c.nEmbdGqa);
      v.set(row.subarray(c.nEmbd + c.nEmbdGqa), t * c.nEmbdGqa);
    }
    const attn = attentionBlock(ctx, l, batch, q, k, v, L.wo);
    // F = FFN(n1; predictor on x);  x' = F + A + x
    const ffn = layerSparseFfn(ctx, l, L.ffn, n1, x, n, "relu");
    const fa = add(s.get("fa", n * c.nEmbd), ffn, attn);
    x = add(s.get("x", n * c.nEmbd), fa, x);
  }

  // logits = output · (LN(x_last)·output_norm + b)
  const h = s.get("out_norm", c.nEmbd);
  be.layerNorm(h, lastRow(x, c.nEmbd), w.outputNorm, w.outputNormB, c.normEps);
  be.matmul(logits, w.output, h, 1);
}
