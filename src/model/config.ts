/**
 * Model hyperparameters from GGUF/PWRI metadata (spec gguf.md §5, model.md), validated so that
 * the forward pass can trust them. Anything missing, mistyped or inconsistent is a
 * {@link ModelConfigError} naming the key and what was found.
 *
 * @module
 */

import { ModelConfigError } from "../errors.ts";
import type { GgufFile } from "../gguf/reader.ts";
import type { RopeMode } from "../backend/backend.ts";

/** Architectures the engine runs. */
export type ModelArch = "llama" | "bamboo" | "falcon";

/** Everything the forward pass needs to know about a model's shape. */
export interface ModelConfig {
  /** `general.architecture`. */
  readonly arch: ModelArch;
  /** PWRI file: predictor-driven sparse FFN; GGUF: dense FFN. */
  readonly sparse: boolean;
  /** Vocabulary size (rows of token_embd). */
  readonly nVocab: number;
  /** Training context length (`<arch>.context_length`). */
  readonly nCtxTrain: number;
  /** Width of the residual stream. */
  readonly nEmbd: number;
  /** FFN neurons per layer. */
  readonly nFf: number;
  /** Decoder blocks. */
  readonly nLayer: number;
  /** Query heads. */
  readonly nHead: number;
  /** Key/value heads (GQA: nHead is a multiple). */
  readonly nHeadKv: number;
  /** n_embd / n_head. */
  readonly headDim: number;
  /** Rotated dims per head (must equal headDim). */
  readonly nRot: number;
  /** headDim · nHeadKv: the width of K and V. */
  readonly nEmbdGqa: number;
  /** RMSNorm eps (llama, bamboo) or LayerNorm eps (falcon). */
  readonly normEps: number;
  /** 0 = adjacent pairs (LLaMA), 2 = NeoX halves (Falcon). */
  readonly ropeMode: RopeMode;
  /** `rope.freq_base` (default 10000). */
  readonly ropeFreqBase: number;
  /** 1 / `rope.scaling.factor` (default 1). */
  readonly ropeFreqScale: number;
  /** `powerinfer.sparse_threshold` from the file, or undefined when absent. */
  readonly fileSparseThreshold: number | undefined;
}

const ARCHS: readonly ModelArch[] = ["llama", "bamboo", "falcon"];

function required(value: number | undefined, key: string): number {
  if (value === undefined) throw new ModelConfigError(`Metadata key "${key}" is missing`);
  return value;
}

function positive(value: number, key: string): number {
  if (!Number.isInteger(value) || value <= 0) {
    throw new ModelConfigError(`Metadata key "${key}" must be a positive integer, found ${value}`);
  }
  return value;
}

/** Reads a u32 key, accepting the other integer types converters sometimes write. */
function getInt(file: GgufFile, key: string): number | undefined {
  const kv = file.get(key);
  if (kv === undefined) return undefined;
  if (typeof kv.value === "number" && Number.isInteger(kv.value)) return kv.value;
  if (typeof kv.value === "bigint") return Number(kv.value);
  throw new ModelConfigError(`Metadata key "${key}" must be an integer, found ${String(kv.value)}`);
}

function getFloat(file: GgufFile, key: string): number | undefined {
  const kv = file.get(key);
  if (kv === undefined) return undefined;
  if (typeof kv.value === "number") return kv.value;
  throw new ModelConfigError(`Metadata key "${key}" must be a number, found ${String(kv.value)}`);
}

/**
 * Reads and checks the hyperparameters of a model file.
 *
 * @param file An open GGUF or PWRI model file.
 * @returns The validated configuration.
 * @throws {ModelConfigError} If the architecture is unsupported or a key is missing or
 * inconsistent (head counts, head dims, GQA ratio, vocabulary size).
 *
 * @example A GQA header (8 heads sharing 2 KV heads), written and read in memory
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { readModelConfig } from "./config.ts";
 * import { parseGguf } from "../gguf/reader.ts";
 * import { serializeGguf } from "../gguf/writer.ts";
 * import { GgmlType, GgufValueType } from "../gguf/types.ts";
 * const u32 = (key: string, value: number) =>
 *   ({ key, type: GgufValueType.UINT32, value }) as const;
 * const bytes = await serializeGguf({
 *   magic: "PWRI",
 *   metadata: [
 *     { key: "general.architecture", type: GgufValueType.STRING, value: "llama" },
 *     u32("llama.embedding_length", 64),
 *     u32("llama.feed_forward_length", 100),
 *     u32("llama.block_count", 2),
 *     u32("llama.attention.head_count", 8),
 *     u32("llama.attention.head_count_kv", 2),
 *     { key: "llama.attention.layer_norm_rms_epsilon", type: GgufValueType.FLOAT32, value: 1e-5 },
 *   ],
 *   tensors: [{
 *     name: "token_embd.weight",
 *     type: GgmlType.F32,
 *     ne: [64, 10],
 *     data: () => new Uint8Array(64 * 10 * 4),
 *   }],
 * });
 * const c = readModelConfig(parseGguf(bytes));
 * equal(c.sparse, true);
 * equal(c.headDim, 8);
 * equal(c.nEmbdGqa, 16);
 * equal(c.nVocab, 10);
 * ```
 */
export function readModelConfig(file: GgufFile): ModelConfig {
  const arch = file.getString("general.architecture");
  if (arch === undefined) {
    throw new ModelConfigError(`Metadata key "general.architecture" is missing`);
  }
  if (!(ARCHS as readonly string[]).includes(arch)) {
    throw new ModelConfigError(`Unsupported architecture "${arch}": expected ${ARCHS.join(", ")}`);
  }
  const a = arch as ModelArch;
  const k = (name: string) => `${a}.${name}`;
  const nEmbd = positive(
    required(getInt(file, k("embedding_length")), k("embedding_length")),
    k("embedding_length"),
  );
  const nFf = positive(
    required(getInt(file, k("feed_forward_length")), k("feed_forward_length")),
    k("feed_forward_length"),
  );
  const nLayer = positive(
    required(getInt(file, k("block_count")), k("block_count")),
    k("block_count"),
  );
  const nHead = positive(
    required(getInt(file, k("attention.head_count")), k("attention.head_count")),
    k("attention.head_count"),
  );
  const nHeadKv = positive(
    getInt(file, k("attention.head_count_kv")) ?? nHead,
    k("attention.head_count_kv"),
  );
  const nCtxTrain = positive(getInt(file, k("context_length")) ?? 2048, k("context_length"));
  if (nEmbd % nHead !== 0) {
    throw new ModelConfigError(
      `Embedding length ${nEmbd} is not a multiple of the head count ${nHead}`,
    );
  }
  if (nHead % nHeadKv !== 0) {
    throw new ModelConfigError(
      `Head count ${nHead} is not a multiple of the KV head count ${nHeadKv}`,
    );
  }
  const headDim = nEmbd / nHead;
  if (headDim % 2 !== 0) throw new ModelConfigError(`Head dim ${headDim} must be even for RoPE`);
  const nRot = getInt(file, k("rope.dimension_count")) ?? headDim;
  if (nRot !== headDim) {
    throw new ModelConfigError(`RoPE dimension count ${nRot} must equal the head dim ${headDim}`);
  }
  const epsKey = a === "falcon"
    ? k("attention.layer_norm_epsilon")
    : k("attention.layer_norm_rms_epsilon");
  const normEps = required(getFloat(file, epsKey), epsKey);
  if (!(normEps >= 0)) {
    throw new ModelConfigError(`Metadata key "${epsKey}" must be >= 0, found ${normEps}`);
  }
  const scalingType = file.getString(k("rope.scaling.type"));
  if (scalingType !== undefined && scalingType !== "none" && scalingType !== "linear") {
    throw new ModelConfigError(
      `Unsupported RoPE scaling type "${scalingType}": expected none or linear`,
    );
  }
  const scaleFactor = getFloat(file, k("rope.scaling.factor")) ??
    getFloat(file, k("rope.scale_linear")) ?? 0;
  const ropeFreqScale = scaleFactor > 0 ? 1 / scaleFactor : 1;
  const ropeFreqBase = getFloat(file, k("rope.freq_base")) ?? 10000;
  if (!(ropeFreqBase > 0)) {
    throw new ModelConfigError(`RoPE frequency base must be > 0, found ${ropeFreqBase}`);
  }
  const tokenEmbd = file.tensor("token_embd.weight");
  if (!tokenEmbd) throw new ModelConfigError(`Tensor "token_embd.weight" is missing`);
  const nVocab = tokenEmbd.ne[1] ?? 1;
  const tokens = file.getArray("tokenizer.ggml.tokens");
  if (tokens && tokens.length !== nVocab) {
    throw new ModelConfigError(
      `Vocabulary has ${tokens.length} tokens but token_embd.weight has ${nVocab} rows`,
    );
  }
  const sparse = file.magic === "PWRI";
  const fileSparseThreshold = getFloat(file, "powerinfer.sparse_threshold");
  return {
    arch: a,
    sparse,
    nVocab,
    nCtxTrain,
    nEmbd,
    nFf,
    nLayer,
    nHead,
    nHeadKv,
    headDim,
    nRot,
    nEmbdGqa: headDim * nHeadKv,
    normEps,
    ropeMode: a === "falcon" ? 2 : 0,
    ropeFreqBase,
    ropeFreqScale,
    fileSparseThreshold,
  };
}

/**
 * The predictor threshold T (spec model.md §6.2): env `LLAMA_SPARSE_PRED_THRESHOLD` (parsed
 * like C `atof`) over the file key over 0.
 *
 * @param fileThreshold `powerinfer.sparse_threshold`, if the file has it.
 * @param env The environment value, if set.
 * @returns The threshold.
 *
 * @example Precedence
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { sparseThreshold } from "./config.ts";
 * equal(sparseThreshold(undefined, undefined), 0);
 * equal(sparseThreshold(0.5, undefined), 0.5);
 * equal(sparseThreshold(0.5, "-2.5"), -2.5);
 * equal(sparseThreshold(0.5, "abc"), 0);
 * ```
 */
export function sparseThreshold(
  fileThreshold: number | undefined,
  env: string | undefined,
): number {
  if (env !== undefined) {
    const v = parseFloat(env.trim());
    return Number.isFinite(v) ? Math.fround(v) : 0;
  }
  return fileThreshold ?? 0;
}
