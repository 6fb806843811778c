// sparse.c: the neuron-aware sparse ops (spec model.md §6.4) against their scalar twins, the
// skip rules, bit-identity across thread counts, and the fused layer call against the ops.
import { deepStrictEqual, equal, ok } from "node:assert/strict";
import {
  activation,
  getThreads,
  matmul,
  setThreads,
  sparseAxpy,
  sparseAxpyRef,
  sparseFfn,
  type SparseFfnTensors,
  sparseMatmul,
  sparseMatmulRef,
} from "../ffi/ops.ts";
import { GgmlType } from "../src/gguf/types.ts";
import { dequantize, quantize } from "../src/quant/quantize.ts";
import { assertClose, seededRandom } from "./_helpers.ts";

/** AVX2 (FMA, 8-lane sums) against the scalar twin, relative to the largest |value|. */
const SPARSE_REL_TOLERANCE = 2e-5;
const TYPES = [GgmlType.F32, GgmlType.F16, GgmlType.Q4_0, GgmlType.Q8_0];

function randomF32(seed: number, n: number, scale = 1): Float32Array {
  const rnd = seededRandom(seed);
  return Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * scale);
}

function weights(seed: number, type: GgmlType, nRows: number, nCols: number): Uint8Array {
  return quantize(type, randomF32(seed, nRows * nCols, 0.5));
}

/** ~30% of neurons active, some hot ones (gpuIdx) and a tie at the threshold. */
function predictor(seed: number, nTokens: number, nRows: number, threshold: number) {
  const rnd = seededRandom(seed);
  const pred = Float32Array.from({ length: nTokens * nRows }, () => rnd() - 0.7 + threshold);
  pred[0] = threshold; // ties count as active
  const gpuIdx = Uint8Array.from({ length: nRows }, (_, j) => (j % 11 === 3 ? 1 : 0));
  return { pred, gpuIdx };
}

function withThreads<T>(n: number, fn: () => T): T {
  const before = getThreads();
  setThreads(n);
  try {
    return fn();
  } finally {
    setThreads(before);
  }
}

const maxAbs = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 1);

for (const type of TYPES) {
  for (const [nRows, nCols, nTokens] of [[70, 96, 1], [33, 288, 3], [1, 32, 2], [9, 2080, 1]]) {
    const what = `${GgmlType[type]} ${nRows}x${nCols}, ${nTokens} tokens`;
    Deno.test(`sparseMatmul() ${what} matches its twin and zeroes skipped rows`, () => {
      const w = weights(nRows * nCols + type, type, nRows, nCols);
      const x = randomF32(7 + nTokens, nTokens * nCols);
      const { pred, gpuIdx } = predictor(nRows + nTokens, nTokens, nRows, 0.25);
      const out = new Float32Array(nTokens * nRows).fill(NaN);
      const ref = new Float32Array(nTokens * nRows).fill(NaN);
      sparseMatmul(out, w, type, nRows, nCols, x, nTokens, pred, 0.25, gpuIdx);
      sparseMatmulRef(ref, w, type, nRows, nCols, x, nTokens, pred, 0.25, gpuIdx);
      assertClose(out, ref, SPARSE_REL_TOLERANCE * maxAbs(ref), "sparseMatmul");
      // active rows equal the dense matmul, skipped ones are exactly 0
      const dense = new Float32Array(nTokens * nRows);
      matmul(dense, w, type, nRows, nCols, x, nTokens);
      for (let i = 0; i < out.length; i++) {
        const active = pred[i]! >= 0.25 && !gpuIdx[i % nRows];
        if (!active) equal(Object.is(out[i], 0), true, `row ${i} must be +0`);
        else ok(Math.abs(out[i]! - dense[i]!) <= SPARSE_REL_TOLERANCE * maxAbs(dense), `row ${i}`);
      }
    });

    Deno.test(`sparseAxpy() ${what} matches its twin and a float64 sum`, () => {
      const nFf = nRows * 32; // Q8_0-quantized activations need whole blocks of neurons
      const wt = weights(nFf + type, type, nFf, nCols);
      const a = randomF32(11 + nTokens, nTokens * nFf, 2);
      const { pred, gpuIdx } = predictor(nFf + nTokens, nTokens, nFf, 0);
      const out = new Float32Array(nTokens * nCols).fill(NaN);
      const ref = new Float32Array(nTokens * nCols).fill(NaN);
      sparseAxpy(out, wt, type, nFf, nCols, a, nTokens, pred, 0, gpuIdx);
      sparseAxpyRef(
        ref,
        wt,
        type,
        nFf,
        nCols,
        a,
        nTokens,
        pred,
        0,
        null === gpuIdx ? null : gpuIdx,
      );
      assertClose(out, ref, SPARSE_REL_TOLERANCE * maxAbs(ref), "sparseAxpy");
      // float64 sum over the dequantized rows; quantized activations loosen the tolerance
      const wf = dequantize(type, wt);
      const expect = new Float64Array(nTokens * nCols);
      for (let t = 0; t < nTokens; t++) {
        for (let j = 0; j < nFf; j++) {
          if (!(pred[t * nFf + j]! >= 0) || gpuIdx[j]) continue;
          for (let k = 0; k < nCols; k++) {
            expect[t * nCols + k] += a[t * nFf + j]! * wf[j * nCols + k]!;
          }
        }
      }
      const tol = type === GgmlType.Q4_0 || type === GgmlType.Q8_0 ? 0.02 : 1e-3;
      assertClose(out, expect, tol * maxAbs(Float32Array.from(expect)), "sparseAxpy vs f64");
    });
  }
}

Deno.test("sparseAxpy() skips neurons whose converted activation is zero", () => {
  const nFf = 64, nCols = 32;
  for (const type of [GgmlType.F16, GgmlType.Q4_0]) {
    const wt = weights(5, type, nFf, nCols);
    const pred = new Float32Array(nFf).fill(1);
    const a = new Float32Array(nFf);
    a[3] = 1;
    const tiny = new Float32Array(a);
    // F16: 1e-9 rounds to +0; Q4_0/Q8_0 activation: 1e-9 · 127/1 rounds to code 0
    tiny[40] = 1e-9;
    const o1 = new Float32Array(nCols), o2 = new Float32Array(nCols);
    sparseAxpy(o1, wt, type, nFf, nCols, a, 1, pred, 0, null);
    sparseAxpy(o2, wt, type, nFf, nCols, tiny, 1, pred, 0, null);
    deepStrictEqual(o2, o1);
  }
});

// The second shape is wider than one axpy column tile of a batch (256): a token alone takes
// whole rows, a batch 256-column slices, and both must give the same bits; its 512 rows make
// several 64-entry chunks, whose passes prefetch across chunk ends.
for (const type of TYPES) {
  for (const [nRows, nCols] of [[256, 160], [512, 544]] as const) {
    Deno.test(`sparse ops ${GgmlType[type]} ${nRows}x${nCols} give the same bits on 1, 2 and 4 threads`, () => {
      const nTokens = 3;
      const w = weights(99 + type, type, nRows, nCols);
      const x = randomF32(3, nTokens * nCols);
      const a = randomF32(4, nTokens * nRows);
      const { pred, gpuIdx } = predictor(6, nTokens, nRows, 0);
      const run = (n: number) =>
        withThreads(n, () => {
          const mm = new Float32Array(nTokens * nRows);
          const mm1 = new Float32Array(nRows);
          const ax = new Float32Array(nTokens * nCols);
          sparseMatmul(mm, w, type, nRows, nCols, x, nTokens, pred, 0, gpuIdx);
          sparseMatmul(
            mm1,
            w,
            type,
            nRows,
            nCols,
            x.subarray(0, nCols),
            1,
            pred.subarray(0, nRows),
            0,
            gpuIdx,
          );
          sparseAxpy(ax, w, type, nRows, nCols, a, nTokens, pred, 0, gpuIdx);
          // one token alone: its rows are split in chunks across threads
          const ax1 = new Float32Array(nCols);
          const a1 = a.subarray(0, nRows), p1 = pred.subarray(0, nRows);
          sparseAxpy(ax1, w, type, nRows, nCols, a1, 1, p1, 0, gpuIdx);
          return [mm, mm1, ax, ax1];
        });
      const one = run(1);
      deepStrictEqual(run(2), one);
      deepStrictEqual(run(4), one);
      // a batch gives each token the bits it gets alone
      deepStrictEqual(one[1], one[0]!.subarray(0, nRows));
      deepStrictEqual(one[3], one[2]!.subarray(0, nCols));
      for (let t = 0; t < nTokens; t++) {
        const ax1 = new Float32Array(nCols);
        const at = a.subarray(t * nRows, (t + 1) * nRows);
        sparseAxpy(
          ax1,
          w,
          type,
          nRows,
          nCols,
          at,
          1,
          pred.subarray(t * nRows, (t + 1) * nRows),
          0,
          gpuIdx,
        );
        deepStrictEqual(ax1, one[2]!.subarray(t * nCols, (t + 1) * nCols));
      }
    });
  }
}

function ffnLayer(seed: number, type: GgmlType, nEmbd: number, nFf: number, nHidden: number) {
  const t = (s: number, rows: number, cols: number) => ({
    data: weights(seed + s, type, rows, cols),
    type,
    nRows: rows,
    nCols: cols,
  });
  return {
    fc1: t(1, nHidden, nEmbd),
    fc2: t(2, nFf, nHidden),
    up: t(3, nFf, nEmbd),
    gate: t(4, nFf, nEmbd),
    downT: t(5, nFf, nEmbd),
  } satisfies SparseFfnTensors;
}

/** The engine's composition of the separate ops (src/model/sparse.ts). */
function ffnByOps(
  w: SparseFfnTensors,
  f: Float32Array,
  z: Float32Array,
  n: number,
  threshold: number,
  gpuIdx: Uint8Array | null,
  kind: "relu_mul" | "relu_relu_mul" | "relu" = "relu_mul",
) {
  const nFf = w.up.nRows, nEmbd = w.downT.nCols, nHidden = w.fc1.nRows;
  const hidden = new Float32Array(n * nHidden);
  matmul(hidden, w.fc1.data, w.fc1.type, nHidden, nEmbd, z, n);
  activation(hidden, hidden, null, "relu");
  const pred = new Float32Array(n * nFf);
  matmul(pred, w.fc2.data, w.fc2.type, nFf, nHidden, hidden, n);
  const up = new Float32Array(n * nFf), gate = new Float32Array(n * nFf);
  sparseMatmul(up, w.up.data, w.up.type, nFf, nEmbd, f, n, pred, threshold, gpuIdx);
  const a = new Float32Array(n * nFf);
  if (kind === "relu") {
    activation(a, up, null, "relu");
  } else {
    sparseMatmul(gate, w.gate!.data, w.gate!.type, nFf, nEmbd, f, n, pred, threshold, gpuIdx);
    activation(a, gate, up, kind);
  }
  const out = new Float32Array(n * nEmbd);
  sparseAxpy(out, w.downT.data, w.downT.type, nFf, nEmbd, a, n, pred, threshold, gpuIdx);
  return { out, pred };
}

for (const type of TYPES) {
  // (a batch takes each neuron's active tokens four at a time: 13 tokens give full and partial
  // groups of gate and up dots)
  for (
    const [nTokens, kind] of [
      [1, "relu_mul"],
      [4, "relu_mul"],
      [13, "relu_mul"],
      [1, "relu_relu_mul"],
      [13, "relu_relu_mul"],
      [13, "relu"],
    ] as const
  ) {
    Deno.test(
      `sparseFfn() ${
        GgmlType[type]
      } ${kind}, ${nTokens} tokens equals the separate ops bit for bit on 1 and 2 threads`,
      () => {
        const nEmbd = 64, nFf = 1024, nHidden = 32;
        const layer = ffnLayer(17 * type, type, nEmbd, nFf, nHidden);
        const w = kind === "relu" ? { ...layer, gate: null } : layer;
        const f = randomF32(21, nTokens * nEmbd);
        const z = randomF32(22, nTokens * nEmbd, 3);
        const gpuIdx = Uint8Array.from({ length: nFf }, (_, j) => (j % 7 === 0 ? 1 : 0));
        const expect = ffnByOps(w, f, z, nTokens, 0, gpuIdx, kind);
        for (const threads of [1, 2]) {
          withThreads(threads, () => {
            const out = new Float32Array(nTokens * nEmbd);
            const pred = new Float32Array(nTokens * nFf);
            sparseFfn(out, f, z, nTokens, w, kind, 0, gpuIdx, pred);
            deepStrictEqual(pred, expect.pred);
            deepStrictEqual(out, expect.out);
          });
        }
      },
    );
  }
}
