/**
 * PowerInfer's sparse FFN (spec model.md §6): a low-rank predictor on the un-normalised
 * residual picks the neurons that will fire; only their rows of up/gate and of the transposed
 * down projection are computed. Hot neurons (GPU index) are skipped here and added by the hot
 * side; without one every neuron is cold (CPU).
 *
 * @module
 */

import type { ActivationKind, Backend, HotFfn, SparseFfnWeights } from "../backend/backend.ts";

export type { SparseFfnWeights };
import type { Scratch } from "./scratch.ts";

/** Per-call settings of the sparse FFN. */
export interface SparseFfnRun {
  readonly layer: number;
  readonly nTokens: number;
  readonly threshold: number;
  /** 1 = hot neuron (skipped on the CPU); null = all cold. */
  readonly gpuIdx: Uint8Array | null;
  readonly hot: HotFfn | null;
  /** ReLU·up (llama), ReLU·ReLU (bamboo) or ReLU (falcon). */
  readonly activation: ActivationKind;
  readonly onActivation?: (layer: number, active: Uint8Array) => void;
}

/**
 * `out = down_t ⊙axpy act(gate·f, up·f)` over the neurons the predictor of `z` selects.
 *
 * @param f The normalised FFN input `[nTokens, nEmbd]`.
 * @param z The predictor input (un-normalised residual) `[nTokens, nEmbd]`.
 * @returns The FFN output `[nTokens, nEmbd]` (a scratch buffer).
 */
export function sparseFfn(
  backend: Backend,
  w: SparseFfnWeights,
  f: Float32Array,
  z: Float32Array,
  run: SparseFfnRun,
  scratch: Scratch,
): Float32Array {
  const n = run.nTokens;
  const nFf = w.up.nRows;
  const nEmbd = w.downT.nCols;
  const pred = scratch.get("ffn.pred", n * nFf);
  const out = scratch.get("ffn.out", n * nEmbd);

  // One native call per layer when the backend can, unless the profiler needs the gate values
  // (the fused CPU kernel wants n_embd and n_ff in multiples of 32; other widths go op by op).
  const fusable = nFf % 32 === 0 && nEmbd % 32 === 0 && w.fc1.nRows % 32 === 0;
  if (backend.sparseFfn && fusable && !run.onActivation && run.activation !== "silu_mul") {
    const kind = w.gate ? run.activation : "relu";
    backend.sparseFfn(out, w, f, z, n, kind as "relu_mul" | "relu_relu_mul" | "relu", {
      pred,
      threshold: run.threshold,
      gpuIdx: run.gpuIdx,
    });
    run.hot?.addHot(run.layer, out, f, n, pred, run.threshold);
    return out;
  }

  // pred = fc2 · ReLU(fc1 · z)
  const hidden = scratch.get("ffn.pred_hidden", n * w.fc1.nRows);
  backend.matmul(hidden, w.fc1, z, n);
  backend.activation(hidden, hidden, null, "relu");
  backend.matmul(pred, w.fc2, hidden, n);
  const sparse = { pred, threshold: run.threshold, gpuIdx: run.gpuIdx };

  // a = act(gate·f, up·f) on active rows; inactive rows are exactly 0
  const up = scratch.get("ffn.up", n * nFf);
  backend.sparseMatmul(up, w.up, f, n, sparse);
  const a = scratch.get("ffn.act", n * nFf);
  let preact = up;
  if (w.gate) {
    const gate = scratch.get("ffn.gate", n * nFf);
    backend.sparseMatmul(gate, w.gate, f, n, sparse);
    backend.activation(a, gate, up, run.activation);
    preact = gate;
  } else {
    backend.activation(a, up, null, "relu");
  }
  if (run.onActivation) reportActivation(run, preact, sparse.pred, nFf);

  // out = Σ_j a[j] · down_t[j]
  backend.sparseAxpy(out, w.downT, a, n, sparse);
  run.hot?.addHot(run.layer, out, f, n, pred, run.threshold);
  return out;
}

/** A neuron fired for a token when it was computed and its gate (or up for Falcon) was > 0. */
function reportActivation(
  run: SparseFfnRun,
  preact: Float32Array,
  pred: Float32Array,
  nFf: number,
): void {
  for (let t = 0; t < run.nTokens; t++) {
    const active = new Uint8Array(nFf);
    for (let j = 0; j < nFf; j++) {
      const i = t * nFf + j;
      active[j] = pred[i]! >= run.threshold && preact[i]! > 0 ? 1 : 0;
    }
    run.onActivation!(run.layer, active);
  }
}
