/**
 * A plain-TypeScript stand-in for the GPU side of the hot/cold split (spec model.md §6.3-6.4):
 * at construction it copies the hot rows of `ffn_up`, `ffn_gate` and `ffn_down_t` of every layer
 * into "striped" f32 matrices in bucket order (what PowerInfer uploads to the GPU); `addHot` then
 * adds, for every token and hot neuron j = bucket[i] with `pred[j] >= T`,
 * `act(gate_i·f, up_i·f) · down_i` into the CPU's output. Lets tests on machines without a GPU
 * exercise the split end to end: CPU (cold) + this (hot) must equal the all-CPU result.
 *
 * Numerics: the CPU's F16 kernels round the FFN input to fp16 before each dot and the
 * activation to fp16 before the axpy (model.md §6.4); with `matchCpuRounding` (default) this
 * class does the same for F16 weights, and quantizes the input through Q8_0 for Q4_0/Q8_0
 * weights, so the two sides differ only in summation order. The Q4_0 axpy's Q8_0 blocks span
 * cold and hot neurons, which the hot side cannot see: there a small difference remains, as it
 * does between PowerInfer's CPU and GPU.
 *
 * @module
 */

import type { ActivationKind, HotFfn } from "../backend/backend.ts";
import type { GgufFile } from "../gguf/reader.ts";
import { GgmlType } from "../gguf/types.ts";
import { dequantizeRow, matrix } from "../model/weights.ts";
import { dequantizeQ8_0, quantizeQ8_0Activation } from "../quant/q8_0.ts";
import type { GpuIndexLayer } from "./gpuidx.ts";

interface StripedLayer {
  readonly bucket: Int32Array;
  readonly up: Float32Array; // [k, nEmbd]
  readonly gate: Float32Array | null; // [k, nEmbd]
  readonly down: Float32Array; // [k, nEmbd]
  readonly upType: GgmlType;
  readonly downType: GgmlType;
}

/** Options of {@link TsHotFfn}. */
export interface TsHotFfnOptions {
  /** Round inputs like the CPU kernels do (default true; see the module doc). */
  readonly matchCpuRounding?: boolean;
  /** ReLU·up (llama), ReLU·ReLU (bamboo) or ReLU (falcon); default from the architecture. */
  readonly activation?: ActivationKind;
}

/**
 * The hot side in plain TypeScript (see the module doc).
 *
 * @example Split a model between the CPU and this stand-in
 * ```ts ignore
 * import { openGguf } from "../gguf/open.ts";
 * import { loadModel } from "../model/model.ts";
 * import { readGpuIndex } from "./gpuidx.ts";
 * import { TsHotFfn } from "./ts_hot_ffn.ts";
 * const index = readGpuIndex("m.gguf.generated.gpuidx");
 * using file = openGguf("m.gguf");
 * const hot = new TsHotFfn(file, index.layers);
 * using model = loadModel("m.gguf", { gpuIdx: index.layers.map((l) => l.gpuIdx), hot });
 * ```
 */
export class TsHotFfn implements HotFfn {
  readonly nEmbd: number;
  readonly nFf: number;
  /** Hot (token, neuron) pairs that passed the predictor, summed over all calls. */
  computed = 0;
  /** Of those, how many had a nonzero activation (contributed to the output). */
  contributed = 0;
  #layers: StripedLayer[];
  #match: boolean;
  #activation: ActivationKind;

  /**
   * @param file The model (its FFN weights are read once, hot rows only).
   * @param layers The GPU index, one entry per layer.
   */
  constructor(file: GgufFile, layers: readonly GpuIndexLayer[], opts: TsHotFfnOptions = {}) {
    const arch = file.getString("general.architecture") ?? "llama";
    const up0 = file.tensor("blk.0.ffn_up.weight");
    this.nEmbd = up0?.ne[0] ?? 0;
    this.nFf = up0?.ne[1] ?? 0;
    this.#match = opts.matchCpuRounding ?? true;
    this.#activation = opts.activation ??
      (arch === "falcon" ? "relu" : arch === "bamboo" ? "relu_relu_mul" : "relu_mul");
    this.#layers = layers.map((l, i) => {
      const p = `blk.${i}`;
      const up = matrix(file, `${p}.ffn_up.weight`, this.nEmbd, this.nFf);
      const gate = file.tensor(`${p}.ffn_gate.weight`)
        ? matrix(file, `${p}.ffn_gate.weight`, this.nEmbd, this.nFf)
        : null;
      const down = matrix(file, `${p}.ffn_down_t.weight`, this.nEmbd, this.nFf);
      const k = l.gpuBucket.length;
      const stripe = (w: typeof up) => {
        const out = new Float32Array(k * this.nEmbd);
        l.gpuBucket.forEach((j, r) => {
          dequantizeRow(w, j, out.subarray(r * this.nEmbd, (r + 1) * this.nEmbd));
        });
        return out;
      };
      return {
        bucket: l.gpuBucket,
        up: stripe(up),
        gate: gate ? stripe(gate) : null,
        down: stripe(down),
        upType: up.type,
        downType: down.type,
      };
    });
  }

  addHot(
    layer: number,
    out: Float32Array,
    ffnInput: Float32Array,
    nTokens: number,
    pred: Float32Array,
    threshold: number,
  ): void {
    const s = this.#layers[layer];
    if (!s || s.bucket.length === 0) return;
    const nEmbd = this.nEmbd;
    const nFf = this.nFf;
    for (let t = 0; t < nTokens; t++) {
      const f = this.#roundInput(ffnInput.subarray(t * nEmbd, (t + 1) * nEmbd), s.upType);
      const o = out.subarray(t * nEmbd, (t + 1) * nEmbd);
      for (let r = 0; r < s.bucket.length; r++) {
        const j = s.bucket[r]!;
        if (!(pred[t * nFf + j]! >= threshold)) continue;
        this.computed++;
        const u = Math.fround(dot(s.up, r * nEmbd, f, nEmbd));
        let a: number;
        if (s.gate) {
          const g = Math.fround(dot(s.gate, r * nEmbd, f, nEmbd));
          const uu = this.#activation === "relu_relu_mul" ? Math.max(u, 0) : u;
          a = Math.fround((g > 0 ? g : 0) * uu);
        } else {
          a = u > 0 ? u : 0;
        }
        if (this.#match && s.downType === GgmlType.F16) a = Math.f16round(a);
        if (a === 0) continue;
        this.contributed++;
        const base = r * nEmbd;
        for (let c = 0; c < nEmbd; c++) o[c] = Math.fround(o[c]! + a * s.down[base + c]!);
      }
    }
  }

  #roundInput(f: Float32Array, type: GgmlType): Float32Array {
    if (!this.#match) return f;
    if (type === GgmlType.F16) return f.map((v) => Math.f16round(v));
    if (type === GgmlType.Q4_0 || type === GgmlType.Q8_0) {
      return dequantizeQ8_0(quantizeQ8_0Activation(f));
    }
    return f;
  }
}

function dot(w: Float32Array, off: number, x: Float32Array, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += w[off + i]! * x[i]!;
  return s;
}
