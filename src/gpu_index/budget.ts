/**
 * What a model puts on the GPU before any FFN neuron, and what one hot neuron costs (spec
 * gpu-index.md §2.2-2.4, counted honestly rather than with PowerInfer's 4.5-slice heuristic).
 *
 * Dense blocks, itemized:
 * - `attention`: every `blk.N.attn_*` tensor (norms, q/k/v/output or fused qkv, biases);
 * - `predictor`: every `blk.N.fc1` / `blk.N.fc2`;
 * - `ffn norms`: `blk.N.ffn_norm` (+bias);
 * - `output`: `output_norm` (+bias) and `output` (the LM head);
 * - `other`: any other tensor that is neither an embedding nor an FFN weight;
 * - `kv cache`: K and V, `nEmbdGqa · nLayer · nCtx` elements each, 2 bytes (f16) or 4 (f32);
 * - `scratch`: f32 work buffers of one decode of `nBatch` tokens, per token
 *   `4·nEmbd` (residual, norm outputs) + `nEmbd + 2·nEmbdGqa` (q, k, v) + `nHead·nCtx`
 *   (attention scores) + `H` (predictor hidden) + `4·nFf` (pred, up, gate, activation) + `nVocab`
 *   (logits).
 * Token/position embeddings stay on the CPU (looked up by row, as in PowerInfer).
 *
 * One hot neuron costs its rows of `ffn_up`, `ffn_gate` (if any) and `ffn_down_t` in their stored
 * types, plus its 4-byte `gpu_bucket` entry (the largest cost over the layers when types differ).
 *
 * @module
 */

import { GpuIndexError } from "../errors.ts";
import type { GgufFile, GgufTensorInfo } from "../gguf/reader.ts";
import { rowByteSize } from "../gguf/types.ts";
import { capacityFromBudget, type DenseItem, type GpuBudget } from "./solve.ts";

/** The model shape the budget needs (a subset of the engine's `ModelConfig`). */
export interface BudgetModelShape {
  readonly nLayer: number;
  readonly nFf: number;
  readonly nEmbd: number;
  readonly nEmbdGqa: number;
  readonly nHead: number;
  readonly nVocab: number;
}

/** Run settings that size the KV cache and the work buffers. */
export interface BudgetRunOptions {
  /** Context tokens (default 512, like `main`). */
  readonly nCtx?: number;
  /** Tokens per decode (default 512). */
  readonly nBatch?: number;
  /** KV cache type (default "f16"). */
  readonly kvType?: "f16" | "f32";
}

/** Bytes per GiB: `--vram-budget G` means `floor(G · 2^30)` bytes. */
export const GIB = 1024 ** 3;

/**
 * Reads the shape from a model file's metadata (PWRI or GGUF, llama/bamboo/falcon).
 *
 * @param file The model.
 * @returns Layers, widths, heads and vocabulary size.
 * @throws {GpuIndexError} If a key is missing.
 */
export function budgetShapeOf(file: GgufFile): BudgetModelShape {
  const arch = file.getString("general.architecture");
  if (!arch) throw new GpuIndexError(`Model has no general.architecture key`);
  const int = (key: string, fallback?: number): number => {
    const kv = file.get(`${arch}.${key}`);
    const v = kv === undefined ? fallback : Number(kv.value);
    if (v === undefined || !Number.isInteger(v) || v <= 0) {
      throw new GpuIndexError(`Model key "${arch}.${key}" is missing or invalid`);
    }
    return v;
  };
  const nEmbd = int("embedding_length");
  const nHead = int("attention.head_count");
  const nHeadKv = int("attention.head_count_kv", nHead);
  const tokenEmbd = file.tensor("token_embd.weight");
  return {
    nLayer: int("block_count"),
    nFf: int("feed_forward_length"),
    nEmbd,
    nHead,
    nEmbdGqa: (nEmbd / nHead) * nHeadKv,
    nVocab: tokenEmbd?.ne[1] ?? 0,
  };
}

const FFN_WEIGHT = /^blk\.\d+\.ffn_(up|gate|down|down_t)\.(weight|bias)$/;
const EMBEDDING = /^(token_embd|position_embd)\.weight$/;

function category(name: string): string {
  if (/^blk\.\d+\.attn_/.test(name)) return "attention";
  if (/^blk\.\d+\.fc[12]\./.test(name)) return "predictor";
  if (/^blk\.\d+\.ffn_norm\./.test(name)) return "ffn norms";
  if (/^output(_norm)?\./.test(name)) return "output";
  return "other";
}

/**
 * Itemizes the dense blocks of a model (see the module doc).
 *
 * @param tensors The model's tensor infos.
 * @param shape Model shape.
 * @param run Context, batch and KV type.
 * @returns Items in PowerInfer's offload order; zero-byte categories are left out.
 *
 * @example KV cache and scratch without any tensors
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { denseItems } from "./budget.ts";
 * const shape = { nLayer: 2, nFf: 64, nEmbd: 16, nEmbdGqa: 16, nHead: 2, nVocab: 32 };
 * const items = denseItems([], shape, { nCtx: 8, nBatch: 1 });
 * strictEqual(items[0]!.part, "kv cache");
 * strictEqual(items[0]!.byteLength, 2 * 16 * 2 * 8 * 2);
 * ```
 */
export function denseItems(
  tensors: readonly GgufTensorInfo[],
  shape: BudgetModelShape,
  run: BudgetRunOptions = {},
): DenseItem[] {
  const nCtx = run.nCtx ?? 512;
  const nBatch = run.nBatch ?? 512;
  const kvBytes = run.kvType === "f32" ? 4 : 2;
  const sums = new Map<string, { bytes: number; n: number }>();
  let predictorHidden = 0;
  for (const t of tensors) {
    if (FFN_WEIGHT.test(t.name) || EMBEDDING.test(t.name)) continue;
    const part = category(t.name);
    const s = sums.get(part) ?? { bytes: 0, n: 0 };
    s.bytes += t.byteLength;
    s.n += 1;
    sums.set(part, s);
    if (/^blk\.\d+\.fc1\.weight$/.test(t.name)) {
      predictorHidden = Math.max(predictorHidden, t.ne[1] ?? 0);
    }
  }
  const items: DenseItem[] = [];
  for (const part of ["attention", "predictor", "ffn norms", "output", "other"]) {
    const s = sums.get(part);
    if (s) items.push({ part, byteLength: s.bytes, detail: `${s.n} tensors` });
  }
  const kvElems = shape.nEmbdGqa * shape.nLayer * nCtx;
  items.push({
    part: "kv cache",
    byteLength: 2 * kvElems * kvBytes,
    detail: `K+V, ${shape.nLayer} layers × ${nCtx} ctx × ${shape.nEmbdGqa} × ${kvBytes} B`,
  });
  const perToken = 5 * shape.nEmbd + 2 * shape.nEmbdGqa + shape.nHead * nCtx +
    predictorHidden + 4 * shape.nFf + shape.nVocab;
  items.push({
    part: "scratch",
    byteLength: 4 * nBatch * perToken,
    detail: `f32 work buffers, ${nBatch} tokens × ${perToken} floats`,
  });
  return items;
}

/**
 * GPU bytes of one hot neuron: its `ffn_up`, `ffn_gate` and `ffn_down_t` rows plus 4 bytes of
 * `gpu_bucket` (the largest over the layers).
 *
 * @throws {GpuIndexError} If a layer lacks `ffn_up` or `ffn_down_t` (not a PowerInfer model).
 *
 * @example
 * ```ts ignore
 * import { openGguf } from "../gguf/open.ts";
 * import { neuronByteCost } from "./budget.ts";
 * using file = openGguf("fortune-relu.q4.powerinfer.gguf");
 * console.log(neuronByteCost(file, 4)); // 3 Q4_0 rows of 192 + 4 = 328
 * ```
 */
export function neuronByteCost(file: GgufFile, nLayer: number): number {
  let worst = 0;
  for (let i = 0; i < nLayer; i++) {
    let bytes = 4;
    for (const kind of ["ffn_up", "ffn_gate", "ffn_down_t"]) {
      const t = file.tensor(`blk.${i}.${kind}.weight`);
      if (!t) {
        if (kind === "ffn_gate") continue;
        throw new GpuIndexError(
          `Tensor "blk.${i}.${kind}.weight" is missing: a GPU index needs a PowerInfer (PWRI) model`,
        );
      }
      bytes += rowByteSize(t.type, t.ne[0]!);
    }
    worst = Math.max(worst, bytes);
  }
  return worst;
}

/**
 * The budget split of a model under `vramBudgetGiB`.
 *
 * @param file The model.
 * @param vramBudgetGiB The VRAM budget in GiB.
 * @param run Context, batch and KV type.
 * @returns Dense items, bytes left for neurons, neuron cost and capacity.
 * @throws {GpuIndexError} If the dense blocks alone exceed the budget (by how much is said).
 *
 * @example
 * ```ts ignore
 * import { openGguf } from "../gguf/open.ts";
 * import { modelBudget } from "./budget.ts";
 * using file = openGguf("llama-7b-relu.powerinfer.gguf");
 * console.log(modelBudget(file, 8).capacityNeurons);
 * ```
 */
export function modelBudget(
  file: GgufFile,
  vramBudgetGiB: number,
  run: BudgetRunOptions = {},
): GpuBudget & { shape: BudgetModelShape } {
  if (!(vramBudgetGiB >= 0) || !Number.isFinite(vramBudgetGiB)) {
    throw new GpuIndexError(`Invalid VRAM budget ${vramBudgetGiB} GiB: expected a number >= 0`);
  }
  const shape = budgetShapeOf(file);
  const budgetBytes = Math.floor(vramBudgetGiB * GIB);
  const budget = capacityFromBudget(
    budgetBytes,
    denseItems(file.tensors, shape, run),
    neuronByteCost(file, shape.nLayer),
  );
  return { ...budget, shape };
}
