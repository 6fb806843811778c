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

/**
 * Runs the forward pass on the native CPU kernels (ffi/ops.ts). The native thread pool is
 * process-wide: each backend re-applies its own thread count before every threaded op, so two
 * models with different `threads` can run in one process.
 *
 * @example Two threads, then a kernel through the backend
 * ```ts ignore
 * import { equal } from "node:assert/strict";
 * import { CpuBackend, getThreads } from "@powerinfer/deno";
 * const backend = new CpuBackend({ threads: 2 });
 * equal(getThreads(), 2);
 * equal(backend.name, "cpu (2 threads)");
 * const out = new Float32Array(4);
 * backend.rmsNorm(out, new Float32Array([1, 1, 1, 1]), new Float32Array([2, 2, 2, 2]), 0);
 * equal(out[0], 2);
 * ```
 */
export class CpuBackend implements Backend {
  readonly name: string;
  readonly #threads: number | undefined;
  readonly #threadsBatch: number | undefined;

  /**
   * @param options `threads`: sets the native pool's thread count now and before each op;
   * `threadsBatch`: the count for multi-token batches.
   * @throws {NativeLibraryError} If the kernel library cannot be loaded.
   * @throws {RangeError} If a thread count is outside 0..1024.
   */
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
