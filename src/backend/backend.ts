/**
 * The compute a forward pass needs, behind one interface so that the CPU kernels, a CUDA
 * backend or a pure-TS test backend can stand in for each other (docs/ARCHITECTURE.md "Engine").
 *
 * Every method works on f32 activations laid out row-major `[nTokens, n]`; weights are
 * zero-copy views of the model mapping ({@link WeightTensor}). Methods never keep references to
 * their arguments after returning.
 *
 * @module
 */

import type { GgmlType } from "../gguf/types.ts";

/** A 2-D weight matrix as stored in the file: `nRows` rows of `nCols` elements of `type`. */
export interface WeightTensor {
  /** Tensor name, verbatim from the file (`"blk.0.attn_q.weight"`). */
  readonly name: string;
  /** ggml type of the stored elements. */
  readonly type: GgmlType;
  /** Rows (ggml `ne[1]`). */
  readonly nRows: number;
  /** Elements per row (ggml `ne[0]`). */
  readonly nCols: number;
  /** The raw bytes, a zero-copy view of the mapping. */
  readonly data: Uint8Array;
}

/** RoPE pairing: 0 = adjacent pairs (LLaMA), 2 = NeoX halves (Falcon); spec model.md §3. */
export type RopeMode = 0 | 2;

/** Gated activation applied between the FFN projections (spec model.md §5). */
export type ActivationKind =
  /** SiLU(gate)·up through ggml's fp16 table (dense LLaMA / SwiGLU). */
  | "silu_mul"
  /** ReLU(gate)·up (ReGLU: sparse LLaMA). */
  | "relu_mul"
  /** ReLU(gate)·ReLU(up) (bamboo). */
  | "relu_relu_mul"
  /** ReLU(gate) (Falcon; `up` unused). */
  | "relu";

/** Element type of the KV cache. */
export type KvType = "f16" | "f32";

/** One layer's slice of the KV cache: K `[nCtx, nEmbdGqa]`, V transposed `[nEmbdGqa, nCtx]`. */
export interface KvLayer {
  /** Element type of k and v. */
  readonly type: KvType;
  /** Cells. */
  readonly nCtx: number;
  /** Width of one cell's K (and V): headDim · nHeadKv. */
  readonly nEmbdGqa: number;
  /** fp16 bits (`Uint16Array`) or f32 values. */
  readonly k: Uint16Array | Float32Array;
  /** V, transposed: row i holds dim i of every cell. */
  readonly v: Uint16Array | Float32Array;
}

/** Arguments of one attention call: a batch of query tokens of one sequence. */
export interface AttentionArgs {
  /** Post-RoPE queries `[nTokens, nHead·headDim]`. */
  readonly q: Float32Array;
  /** The cache layer holding this batch's keys and values already. */
  readonly layer: KvLayer;
  /** Cells 0 … nKv−1 are attended (masked ones contribute nothing). */
  readonly nKv: number;
  /** Query tokens. */
  readonly nTokens: number;
  /** Query heads. */
  readonly nHead: number;
  /** KV heads; query head h reads kv head h / (nHead / nHeadKv). */
  readonly nHeadKv: number;
  /** Dims per head. */
  readonly headDim: number;
  /** Position of each query token `[nTokens]`. */
  readonly queryPositions: Int32Array;
  /** Position held by each cell `[nKv]`, −1 when empty. */
  readonly cellPositions: Int32Array;
  /** Multiplies K·q before the mask and softmax (1/sqrt(headDim)). */
  readonly scale: number;
}

/** Arguments shared by the two sparse FFN ops (spec model.md §6.4). */
export interface SparseArgs {
  /** Predictor output `[nTokens, nFf]`; neuron j of token t is active iff `pred >= threshold`. */
  readonly pred: Float32Array;
  /** The predictor threshold T. */
  readonly threshold: number;
  /** 1 = hot neuron (computed elsewhere, skipped here); null = every neuron is cold. */
  readonly gpuIdx: Uint8Array | null;
}

/** The tensors of one sparse FFN layer (spec model.md §6). */
export interface SparseFfnWeights {
  /** Predictor `[nHidden, nEmbd]` and `[nFf, nHidden]`. */
  readonly fc1: WeightTensor;
  /** See fc1. */
  readonly fc2: WeightTensor;
  /** `[nFf, nEmbd]`. */
  readonly up: WeightTensor;
  /** `[nFf, nEmbd]`; null for Falcon (no gate). */
  readonly gate: WeightTensor | null;
  /** Transposed down projection `[nFf, nEmbd]`: row j is neuron j's output vector. */
  readonly downT: WeightTensor;
}

/** The operations of a forward pass. */
export interface Backend {
  /** Short name for summaries ("cpu", "ts", "cuda"). */
  readonly name: string;
  /** `out[t, r] = W[r] · x[t]` with x converted to W's dot type; out `[nTokens, nRows]`. */
  matmul(out: Float32Array, w: WeightTensor, x: Float32Array, nTokens: number): void;
  /** RMSNorm of every row of x times `w` (rows = x.length / w.length). */
  rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, eps: number): void;
  /** LayerNorm of every row of x times `w` plus `b`. */
  layerNorm(
    out: Float32Array,
    x: Float32Array,
    w: Float32Array,
    b: Float32Array | null,
    eps: number,
  ): void;
  /** Rotates the first nDims dims of every head in place; x `[nTokens, nHeads, headDim]`. */
  rope(
    x: Float32Array,
    nTokens: number,
    nHeads: number,
    headDim: number,
    nDims: number,
    positions: Int32Array,
    mode: RopeMode,
    freqBase: number,
    freqScale: number,
  ): void;
  /** Writes k and v rows `[nTokens, nEmbdGqa]` into the cells `slots` of one cache layer. */
  kvStore(
    layer: KvLayer,
    k: Float32Array,
    v: Float32Array,
    nTokens: number,
    slots: Int32Array,
  ): void;
  /** Causal GQA attention over the cache; out `[nTokens, nHead·headDim]`. */
  attention(out: Float32Array, args: AttentionArgs): void;
  /** Gated activation, element-wise; out may alias gate or up. */
  activation(
    out: Float32Array,
    gate: Float32Array,
    up: Float32Array | null,
    kind: ActivationKind,
  ): void;
  /** Rows of W for active cold neurons only, others exactly 0; out `[nTokens, nRows]`. */
  sparseMatmul(
    out: Float32Array,
    w: WeightTensor,
    x: Float32Array,
    nTokens: number,
    sparse: SparseArgs,
  ): void;
  /**
   * `out[t] = Σ_j a[t, j]·Wt[j]` over active cold neurons in ascending order; Wt is the
   * transposed down projection `[nFf, nEmbd]`; out `[nTokens, nEmbd]` (overwritten).
   */
  sparseAxpy(
    out: Float32Array,
    wt: WeightTensor,
    a: Float32Array,
    nTokens: number,
    sparse: SparseArgs,
  ): void;
  /**
   * Optional: one layer's whole sparse FFN in one call, with the same result as the op-by-op
   * path (pred = fc2·ReLU(fc1·z), act on active cold rows, axpy). `sparse.pred` receives the
   * predictor output `[nTokens, nFf]`; out `[nTokens, nEmbd]`.
   */
  sparseFfn?(
    out: Float32Array,
    w: SparseFfnWeights,
    f: Float32Array,
    z: Float32Array,
    nTokens: number,
    kind: "relu_mul" | "relu_relu_mul" | "relu",
    sparse: SparseArgs,
  ): void;
}

/**
 * Computes the hot (GPU-resident) neurons of a sparse FFN; its results are added to the CPU's
 * cold ones. Provided by the GPU-index / CUDA owner; with none, every neuron is cold.
 */
export interface HotFfn {
  /** Adds the hot neurons' contribution of layer `layer` into `out` `[nTokens, nEmbd]`. */
  addHot(
    layer: number,
    out: Float32Array,
    ffnInput: Float32Array,
    nTokens: number,
    pred: Float32Array,
    threshold: number,
  ): void;
}
