// A pure-TS Backend (F32 and F16 weights only) written straight from shared/spec/model.md, to
// check the native CPU backend and the forward passes on synthetic models. Slow; tests only.
import type {
  ActivationKind,
  AttentionArgs,
  Backend,
  KvLayer,
  RopeMode,
  SparseArgs,
  WeightTensor,
} from "../src/backend/backend.ts";
import { GgmlType } from "../src/gguf/types.ts";

const f32 = Math.fround;
const f16 = Math.f16round;

/** Row r of a F32/F16 weight as numbers, and the activation rounding its dot type implies. */
function rowOf(w: WeightTensor, r: number): { row: Float32Array; round: (x: number) => number } {
  const n = w.nCols;
  if (w.type === GgmlType.F32) {
    return {
      row: new Float32Array(w.data.buffer, w.data.byteOffset + r * n * 4, n),
      round: (x) => x,
    };
  }
  if (w.type === GgmlType.F16) {
    const h = new Float16Array(w.data.buffer, w.data.byteOffset + r * n * 2, n);
    return { row: Float32Array.from(h), round: f16 };
  }
  throw new TypeError(`TsBackend supports F32 and F16 weights, not type ${w.type}`);
}

function dot(
  row: Float32Array,
  x: Float32Array,
  off: number,
  round: (x: number) => number,
): number {
  let acc = 0;
  for (let i = 0; i < row.length; i++) acc += row[i]! * round(x[off + i]!);
  return f32(acc);
}

const relu = (z: number) => (z > 0 ? z : 0);

/** The reference backend. */
export class TsBackend implements Backend {
  readonly name = "ts";

  matmul(out: Float32Array, w: WeightTensor, x: Float32Array, nTokens: number): void {
    for (let r = 0; r < w.nRows; r++) {
      const { row, round } = rowOf(w, r);
      for (let t = 0; t < nTokens; t++) out[t * w.nRows + r] = dot(row, x, t * w.nCols, round);
    }
  }

  rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, eps: number): void {
    const n = w.length;
    for (let o = 0; o < x.length; o += n) {
      let s = 0;
      for (let i = 0; i < n; i++) s += f32(x[o + i]! * x[o + i]!);
      const c = f32(1 / f32(Math.sqrt(f32(f32(s / n) + eps))));
      for (let i = 0; i < n; i++) out[o + i] = f32(f32(x[o + i]! * c) * w[i]!);
    }
  }

  layerNorm(
    out: Float32Array,
    x: Float32Array,
    w: Float32Array,
    b: Float32Array | null,
    eps: number,
  ): void {
    const n = w.length;
    for (let o = 0; o < x.length; o += n) {
      let s = 0;
      for (let i = 0; i < n; i++) s += x[o + i]!;
      const mu = f32(s / n);
      let v = 0;
      for (let i = 0; i < n; i++) v += f32(f32(x[o + i]! - mu) ** 2);
      const c = f32(1 / f32(Math.sqrt(f32(f32(v / n) + eps))));
      for (let i = 0; i < n; i++) {
        out[o + i] = f32(f32(f32(f32(x[o + i]! - mu) * c) * w[i]!) + (b ? b[i]! : 0));
      }
    }
  }

  rope(
    x: Float32Array,
    nTokens: number,
    nHeads: number,
    hd: number,
    nDims: number,
    pos: Int32Array,
    mode: RopeMode,
    base: number,
    fs: number,
  ): void {
    const step = f32(Math.pow(base, f32(-2 / nDims)));
    for (let t = 0; t < nTokens; t++) {
      for (let h = 0; h < nHeads; h++) {
        const o = (t * nHeads + h) * hd;
        let theta = f32(pos[t]!);
        if (mode === 2) theta = f32(theta * fs);
        for (let k = 0; k < nDims / 2; k++) {
          const a = f32(fs * theta);
          const c = f32(Math.cos(a)), s = f32(Math.sin(a));
          const i0 = mode === 2 ? o + k : o + 2 * k;
          const i1 = mode === 2 ? o + k + nDims / 2 : o + 2 * k + 1;
          const x0 = x[i0]!, x1 = x[i1]!;
          x[i0] = f32(f32(x0 * c) - f32(x1 * s));
          x[i1] = f32(f32(x0 * s) + f32(x1 * c));
          theta = f32(theta * step);
        }
      }
    }
  }

  kvStore(
    layer: KvLayer,
    k: Float32Array,
    v: Float32Array,
    nTokens: number,
    slots: Int32Array,
  ): void {
    const store = (a: Uint16Array | Float32Array, i: number, x: number) => {
      if (a instanceof Float32Array) a[i] = x;
      else new Float16Array(a.buffer, a.byteOffset, a.length)[i] = x;
    };
    const n = layer.nEmbdGqa;
    for (let t = 0; t < nTokens; t++) {
      for (let i = 0; i < n; i++) {
        store(layer.k, slots[t]! * n + i, k[t * n + i]!);
        store(layer.v, i * layer.nCtx + slots[t]!, v[t * n + i]!);
      }
    }
  }

  attention(out: Float32Array, a: AttentionArgs): void {
    const L = a.layer;
    const asF = (x: Uint16Array | Float32Array) =>
      x instanceof Float32Array ? x : new Float16Array(x.buffer, x.byteOffset, x.length);
    const K = asF(L.k), V = asF(L.v);
    const round = L.type === "f16" ? f16 : (x: number) => x;
    const hd = a.headDim, g = a.nHead / a.nHeadKv;
    for (let t = 0; t < a.nTokens; t++) {
      for (let h = 0; h < a.nHead; h++) {
        const kvh = Math.floor(h / g);
        const q = (t * a.nHead + h) * hd;
        const score = new Array<number>(a.nKv).fill(-Infinity);
        let mx = -Infinity;
        for (let s = 0; s < a.nKv; s++) {
          const p = a.cellPositions[s]!;
          if (p < 0 || p > a.queryPositions[t]!) continue;
          let d = 0;
          for (let i = 0; i < hd; i++) d += K[s * L.nEmbdGqa + kvh * hd + i]! * round(a.q[q + i]!);
          score[s] = f32(f32(d) * a.scale);
          mx = Math.max(mx, score[s]!);
        }
        let sum = 0;
        const e = score.map((s) => (s === -Infinity ? 0 : f16(Math.exp(f16(f32(s - mx))))));
        for (const x of e) sum += x;
        const inv = f32(1 / sum);
        for (let i = 0; i < hd; i++) {
          let acc = 0;
          for (let s = 0; s < a.nKv; s++) {
            if (e[s] !== 0) acc += V[(kvh * hd + i) * L.nCtx + s]! * round(f32(e[s]! * inv));
          }
          out[q + i] = f32(acc);
        }
      }
    }
  }

  activation(
    out: Float32Array,
    gate: Float32Array,
    up: Float32Array | null,
    kind: ActivationKind,
  ): void {
    for (let i = 0; i < out.length; i++) {
      const g = gate[i]!, u = up ? up[i]! : 0;
      if (kind === "silu_mul") {
        const x = f16(g);
        out[i] = f32(f16(f32(x / f32(1 + f32(Math.exp(-x))))) * u);
      } else if (kind === "relu_mul") out[i] = f32(relu(g) * u);
      else if (kind === "relu_relu_mul") out[i] = f32(relu(g) * relu(u));
      else out[i] = relu(g);
    }
  }

  sparseMatmul(
    out: Float32Array,
    w: WeightTensor,
    x: Float32Array,
    nTokens: number,
    s: SparseArgs,
  ): void {
    for (let r = 0; r < w.nRows; r++) {
      const { row, round } = rowOf(w, r);
      for (let t = 0; t < nTokens; t++) {
        const on = s.pred[t * w.nRows + r]! >= s.threshold && !(s.gpuIdx && s.gpuIdx[r]);
        out[t * w.nRows + r] = on ? dot(row, x, t * w.nCols, round) : 0;
      }
    }
  }

  sparseAxpy(
    out: Float32Array,
    wt: WeightTensor,
    a: Float32Array,
    nTokens: number,
    s: SparseArgs,
  ): void {
    out.fill(0);
    for (let t = 0; t < nTokens; t++) {
      for (let j = 0; j < wt.nRows; j++) {
        const { row, round } = rowOf(wt, j);
        const aj = round(a[t * wt.nRows + j]!);
        if (s.pred[t * wt.nRows + j]! < s.threshold || (s.gpuIdx && s.gpuIdx[j]) || aj === 0) {
          continue;
        }
        for (let i = 0; i < wt.nCols; i++) {
          out[t * wt.nCols + i] = f32(out[t * wt.nCols + i]! + f32(row[i]! * aj));
        }
      }
    }
  }
}
