// quant_dot.c: activation quantizers bit-exact against the TS references of the spec
// (src/quant/), and every AVX2 dot product / quantized matmul against its scalar twin.
import { deepStrictEqual, ok } from "node:assert/strict";
import {
  getThreads,
  matmul,
  matmulRef,
  quantizeQ8_0Act,
  quantizeQ8_0ActRef,
  quantizeQ8_KAct,
  setThreads,
  sparseMatmul,
  vecDotQuant,
  vecDotQuantRef,
} from "../ffi/ops.ts";
import { GgmlType } from "../src/gguf/types.ts";
import { fp16FromF32 } from "../src/quant/f16.ts";
import { quantizeQ8_0Activation } from "../src/quant/q8_0.ts";
import { quantizeQ8_K } from "../src/quant/q8_k.ts";
import { assertClose, seededRandom } from "./_helpers.ts";

/** Relative tolerance of an AVX2 dot (8-lane f32 sums, FMA) against the block-order scalar one. */
const DOT_REL_TOLERANCE = 1e-5;

function randomF32(seed: number, n: number, scale = 2): Float32Array {
  const rnd = seededRandom(seed);
  const x = Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * scale);
  // plant exact ties of the Q8_0 rounding (x·127/amax = k + 0.5) and zero blocks
  if (n >= 64) {
    x.fill(0, 32, 64);
    for (let j = 0; j < 32; j++) x[j] = j === 0 ? 127 : (j % 8) + 0.5;
  }
  return x;
}

/** Random weight rows of `type` with sane fp16 scales. */
function randomWeights(seed: number, type: GgmlType, nRows: number, nCols: number): Uint8Array {
  const rnd = seededRandom(seed);
  const [block, bytes, dOffset] = type === GgmlType.Q4_0
    ? [32, 18, 0]
    : type === GgmlType.Q8_0
    ? [32, 34, 0]
    : [256, 210, 208];
  const nb = (nRows * nCols) / block;
  const w = Uint8Array.from({ length: nb * bytes }, () => Math.floor(rnd() * 256));
  for (let b = 0; b < nb; b++) {
    const h = fp16FromF32((rnd() * 2 - 1) * 0.05);
    w[b * bytes + dOffset] = h & 0xff;
    w[b * bytes + dOffset + 1] = h >>> 8;
  }
  return w;
}

for (const n of [32, 64, 96, 4096 + 32]) {
  Deno.test(`quantizeQ8_0Act() is bit-exact with the spec's activation variant at n=${n}`, () => {
    const x = randomF32(n, n);
    const ts = quantizeQ8_0Activation(x);
    deepStrictEqual(quantizeQ8_0Act(x), ts);
    deepStrictEqual(quantizeQ8_0ActRef(x), ts);
  });
}

Deno.test("quantizeQ8_0Act() rounds x·127/amax halves to even", () => {
  const x = new Float32Array(32);
  x[0] = 127;
  x[1] = 2.5;
  x[2] = -3.5;
  const q = new Int8Array(quantizeQ8_0Act(x).buffer, 2, 32);
  deepStrictEqual([q[0], q[1], q[2]], [127, 2, -4]);
});

for (const n of [256, 512, 2048 + 256]) {
  Deno.test(`quantizeQ8_KAct() is bit-exact with the spec's Q8_K at n=${n}`, () => {
    const x = randomF32(n + 1, n, 3);
    deepStrictEqual(quantizeQ8_KAct(x), quantizeQ8_K(x));
  });
}

for (const type of [GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q6_K]) {
  const lengths = type === GgmlType.Q6_K ? [256, 768, 4096 + 256] : [32, 96, 4096 + 32];
  for (const n of lengths) {
    Deno.test(`vecDotQuant() ${GgmlType[type]} matches its scalar twin at n=${n}`, () => {
      const w = randomWeights(n * 7 + type, type, 1, n);
      const x = randomF32(n * 3 + type, n);
      const y = type === GgmlType.Q6_K ? quantizeQ8_KAct(x) : quantizeQ8_0Act(x);
      const fast = vecDotQuant(type, n, w, y);
      const ref = vecDotQuantRef(type, n, w, y);
      ok(Number.isFinite(ref));
      assertClose([fast], [ref], DOT_REL_TOLERANCE * Math.max(1, Math.abs(ref)), "dot");
    });
  }
}

const MATMUL_CASES: [GgmlType, number][] = [
  [GgmlType.Q4_0, 288], // 9 blocks: the 8-block step and a tail
  [GgmlType.Q4_0, 96], // short rows (no 8-block step): four rows per pass, then one by one
  [GgmlType.Q8_0, 288],
  [GgmlType.Q6_K, 512],
];
for (const [type, nCols] of MATMUL_CASES) {
  for (const [nRows, nTokens] of [[1, 1], [7, 3], [33, 5], [70, 9]]) {
    Deno.test(
      `matmul() ${GgmlType[type]} ${nRows}x${nCols} x ${nTokens} tokens matches matmulRef()`,
      () => {
        const w = randomWeights(nRows * 31 + nTokens, type, nRows, nCols);
        const x = randomF32(nRows + nTokens, nTokens * nCols);
        const out = new Float32Array(nTokens * nRows);
        const ref = new Float32Array(nTokens * nRows);
        matmul(out, w, type, nRows, nCols, x, nTokens);
        matmulRef(ref, w, type, nRows, nCols, x, nTokens);
        const scale = Math.max(1, ...ref.map(Math.abs));
        assertClose(out, ref, DOT_REL_TOLERANCE * scale, "matmul");
        // every token of a batch gives what it gives alone
        for (let t = 0; t < nTokens; t++) {
          const one = new Float32Array(nRows);
          matmul(one, w, type, nRows, nCols, x.subarray(t * nCols, (t + 1) * nCols), 1);
          deepStrictEqual(one, out.subarray(t * nRows, (t + 1) * nRows));
        }
      },
    );
  }
}

/** f32 fused multiply-add for ggml's block step: a·b is exact in f64 (24-bit d, |lane| < 2^13). */
function fmaf(a: number, b: number, c: number): number {
  return Math.fround(a * b + c);
}

/**
 * ggml's AVX2 Q4_0·Q8_0 / Q8_0·Q8_0 dot (PowerInfer's x86 arithmetic) for one row: per block,
 * lane l = Σ over elements 4l..4l+3 of the integer products (Q4_0 element e < 16 in the low
 * nibble of qs[e], e ≥ 16 in the high nibble of qs[e−16]), acc[l] = fma(f32(dx)·f32(dy), lane,
 * acc[l]); then hsum_float_8 = ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
 */
function dotGgmlAvx2(type: GgmlType, w: Uint8Array, y: Uint8Array, nBlocks: number): number {
  const bytes = type === GgmlType.Q4_0 ? 18 : 34;
  const f16 = (b: Uint8Array, o: number) => new Float16Array(b.slice(o, o + 2).buffer)[0]!;
  const acc = new Array<number>(8).fill(0);
  for (let b = 0; b < nBlocks; b++) {
    const px = b * bytes, py = b * 34;
    const d = Math.fround(f16(w, px) * f16(y, py));
    for (let lane = 0; lane < 8; lane++) {
      let sum = 0;
      for (let e = 4 * lane; e < 4 * lane + 4; e++) {
        const q = type === GgmlType.Q4_0
          ? (e < 16 ? w[px + 2 + e]! & 15 : w[px + 2 + e - 16]! >> 4) - 8
          : (w[px + 2 + e]! << 24) >> 24;
        sum += q * ((y[py + 2 + e]! << 24) >> 24);
      }
      acc[lane] = fmaf(d, sum, acc[lane]!);
    }
  }
  const r = [0, 1, 2, 3].map((i) => Math.fround(acc[i + 4]! + acc[i]!));
  return Math.fround(Math.fround(r[0]! + r[2]!) + Math.fround(r[1]! + r[3]!));
}

// Sparse Q4_0 models flip predictor decisions on last-bit differences (PowerInfer's fixtures
// failed by 0.06 when the kernels summed 8 blocks per lane), so every fast Q4_0/Q8_0 path (the
// AVX2 kernels, and without AVX2 their portable twins) is pinned to ggml's AVX2 bits:
// matrix-vector row groups and their leftovers, short predictor rows, n % 256 tails, 4-token
// prompt tiles, the sparse gather-dot, 1 and 2 threads.
for (const type of [GgmlType.Q4_0, GgmlType.Q8_0]) {
  for (
    const [nRows, nCols, nTokens] of [[37, 96, 1], [70, 256, 1], [45, 2048 + 96, 1], [
      19,
      352,
      6,
    ]]
  ) {
    Deno.test({
      name: `matmul()/sparseMatmul() ${
        GgmlType[type]
      } ${nRows}x${nCols} x ${nTokens} equal ggml's AVX2 dot bit for bit`,
      fn: () => {
        const w = randomWeights(nRows + nCols, type, nRows, nCols);
        const x = randomF32(nCols + 7, nTokens * nCols, 3);
        const rowBytes = (nCols / 32) * (type === GgmlType.Q4_0 ? 18 : 34);
        const expected = new Float32Array(nTokens * nRows);
        for (let t = 0; t < nTokens; t++) {
          const y = quantizeQ8_0Activation(x.subarray(t * nCols, (t + 1) * nCols));
          for (let r = 0; r < nRows; r++) {
            expected[t * nRows + r] = dotGgmlAvx2(
              type,
              w.subarray(r * rowBytes, (r + 1) * rowBytes),
              y,
              nCols / 32,
            );
          }
        }
        const before = getThreads();
        try {
          for (const threads of [1, 2]) {
            setThreads(threads);
            const out = new Float32Array(nTokens * nRows);
            matmul(out, w, type, nRows, nCols, x, nTokens);
            assertClose(out, expected, 0, `matmul, ${threads} threads`);
            // every other row active
            const pred = Float32Array.from({ length: nTokens * nRows }, (_, i) => i % 2 ? -1 : 1);
            const sparse = new Float32Array(nTokens * nRows);
            sparseMatmul(sparse, w, type, nRows, nCols, x, nTokens, pred, 0, null);
            const want = expected.map((v, i) => i % 2 ? 0 : v);
            assertClose(sparse, want, 0, `sparseMatmul, ${threads} threads`);
          }
        } finally {
          setThreads(before);
        }
      },
    });
  }
}
