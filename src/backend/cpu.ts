/**
 * The CPU backend: every op is one call into the native kernels (ffi/ops.ts), threaded by the
 * native pool. Deterministic for any thread count: each output element is computed by one
 * thread in a fixed order (the sparse ops included).
 *
 * @module
 */

import {
  activation,
  attention,
  getThreads,
  kvStore,
  layerNorm,
  matmul,
  rmsNorm,
  rope,
  setThreads,
  sparseAxpy,
  sparseFfn,
  sparseMatmul,
} from "../../ffi/ops.ts";
import type {
  ActivationKind,
  AttentionArgs,
  Backend,
  KvLayer,
  RopeMode,
  SparseArgs,
  SparseFfnWeights,
  WeightTensor,
} from "./backend.ts";

/** Options of {@link CpuBackend}. */
export interface CpuBackendOptions {
  /** Kernel threads; undefined keeps the native default (physical cores). */
  threads?: number;
  /** Threads for multi-token batches (prompt eval, `-tb`); default: `threads`. */
  threadsBatch?: number;
}

/** Runs the forward pass on the native CPU kernels. */
export class CpuBackend implements Backend {
  readonly name: string;
  readonly #threads: number | undefined;
  readonly #threadsBatch: number | undefined;

  /** @param options `threads`: sets the native pool's thread count now and before each op. */
  constructor(options: CpuBackendOptions = {}) {
    this.#threads = options.threads;
    this.#threadsBatch = options.threadsBatch;
    if (options.threads !== undefined) setThreads(options.threads);
    this.name = `cpu (${getThreads()} threads)`;
  }

  /** Re-applies this backend's thread count (the native pool is shared by the process). */
  #useThreads(nTokens: number): void {
    const want = nTokens > 1 ? this.#threadsBatch ?? this.#threads : this.#threads;
    if (want !== undefined && getThreads() !== want) setThreads(want);
  }

  matmul(out: Float32Array, w: WeightTensor, x: Float32Array, nTokens: number): void {
    this.#useThreads(nTokens);
    matmul(out, w.data, w.type, w.nRows, w.nCols, x, nTokens);
  }

  rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, eps: number): void {
    rmsNorm(out, x, w, eps);
  }

  layerNorm(
    out: Float32Array,
    x: Float32Array,
    w: Float32Array,
    b: Float32Array | null,
    eps: number,
  ): void {
    layerNorm(out, x, w, b, eps);
  }

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
  ): void {
    rope(x, nTokens, nHeads, headDim, nDims, positions, mode, freqBase, freqScale);
  }

  kvStore(
    layer: KvLayer,
    k: Float32Array,
    v: Float32Array,
    nTokens: number,
    slots: Int32Array,
  ): void {
    kvStore(layer.k, layer.v, layer.nCtx, layer.nEmbdGqa, k, v, nTokens, slots);
  }

  attention(out: Float32Array, a: AttentionArgs): void {
    this.#useThreads(a.nTokens);
    attention(
      out,
      a.q,
      a.layer.k,
      a.layer.v,
      a.layer.nCtx,
      a.nKv,
      a.nTokens,
      a.nHead,
      a.nHeadKv,
      a.headDim,
      a.queryPositions,
      a.cellPositions,
      a.scale,
    );
  }

  activation(
    out: Float32Array,
    gate: Float32Array,
    up: Float32Array | null,
    kind: ActivationKind,
  ): void {
    activation(out, gate, up, kind);
  }

  sparseMatmul(
    out: Float32Array,
    w: WeightTensor,
    x: Float32Array,
    nTokens: number,
    s: SparseArgs,
  ): void {
    this.#useThreads(nTokens);
    sparseMatmul(
      out,
      w.data,
      w.type,
      w.nRows,
      w.nCols,
      x,
      nTokens,
      s.pred,
      s.threshold,
      s.gpuIdx,
    );
  }

  sparseAxpy(
    out: Float32Array,
    wt: WeightTensor,
    a: Float32Array,
    nTokens: number,
    s: SparseArgs,
  ): void {
    this.#useThreads(nTokens);
    sparseAxpy(
      out,
      wt.data,
      wt.type,
      wt.nRows,
      wt.nCols,
      a,
      nTokens,
      s.pred,
      s.threshold,
      s.gpuIdx,
    );
  }

  sparseFfn(
    out: Float32Array,
    w: SparseFfnWeights,
    f: Float32Array,
    z: Float32Array,
    nTokens: number,
    kind: "relu_mul" | "relu_relu_mul" | "relu",
    s: SparseArgs,
  ): void {
    this.#useThreads(nTokens);
    sparseFfn(out, f, z, nTokens, w, kind, s.threshold, s.gpuIdx, s.pred);
  }
}
