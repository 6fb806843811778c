// The engine matches PowerInfer's Q4_0 logits to ~1e-6 only if the Q4_0·Q8_0 dot product
// keeps ggml's AVX2 arithmetic (shared/spec/q4_0.md §4): per block, 8 int32 lanes holding
// Σ (q−8)·y over 4 consecutive elements, converted to f32 and accumulated with one FMA
// by d = f32(dx)·f32(dy) per lane; then hsum_float_8. Sparse files amplify any other rounding
// into flipped predictor decisions (tests/model_llama_test.ts). This pins that arithmetic.
import { matmul } from "../ffi/ops.ts";
import { GgmlType } from "../src/gguf/types.ts";
import { quantize } from "../src/quant/quantize.ts";
import { quantizeQ8_0Activation } from "../src/quant/q8_0.ts";
import { assertClose, seededRandom } from "./_helpers.ts";

const f32 = Math.fround;

/** f32 fused multiply-add: exact in f64 for these operands (|q| < 2^10, 24-bit d), one rounding. */
function fmaf(a: number, b: number, c: number): number {
  return f32(a * b + c);
}

function f16At(bytes: Uint8Array, offset: number): number {
  return new Float16Array(bytes.slice(offset, offset + 2).buffer)[0]!;
}

/** ggml_vec_dot_q4_0_q8_0, AVX2 path, for one row. */
function dotGgmlAvx2(x: Uint8Array, y: Uint8Array, nBlocks: number): number {
  const acc = new Array<number>(8).fill(0);
  for (let b = 0; b < nBlocks; b++) {
    const px = b * 18, py = b * 34;
    const d = f32(f16At(x, px) * f16At(y, py));
    for (let lane = 0; lane < 8; lane++) {
      let sum = 0;
      for (let e = 4 * lane; e < 4 * lane + 4; e++) {
        const q = e < 16 ? x[px + 2 + e]! & 15 : x[px + 2 + e - 16]! >> 4;
        sum += (q - 8) * ((y[py + 2 + e]! << 24) >> 24);
      }
      acc[lane] = fmaf(d, sum, acc[lane]!);
    }
  }
  // hsum_float_8: (hi4 + lo4), then pairs (0+2, 1+3), then the two
  const r = [0, 1, 2, 3].map((i) => f32(acc[i + 4]! + acc[i]!));
  return f32(f32(r[0]! + r[2]!) + f32(r[1]! + r[3]!));
}

Deno.test("matmul() Q4_0 equals ggml's AVX2 q4_0·q8_0 dot bit for bit (one token)", () => {
  const rand = seededRandom(99);
  const [nRows, nCols] = [64, 256];
  const w = quantize(
    GgmlType.Q4_0,
    Float32Array.from({ length: nRows * nCols }, () => rand() * 2 - 1),
  );
  const x = Float32Array.from({ length: nCols }, () => (rand() * 2 - 1) * 3);
  const out = new Float32Array(nRows);
  matmul(out, w, GgmlType.Q4_0, nRows, nCols, x, 1);
  const y = quantizeQ8_0Activation(x);
  const rowBytes = (nCols / 32) * 18;
  const expected = Float32Array.from(
    { length: nRows },
    (_, r) => dotGgmlAvx2(w.subarray(r * rowBytes, (r + 1) * rowBytes), y, nCols / 32),
  );
  assertClose(out, expected, 0, "Q4_0 matmul vs ggml AVX2 arithmetic");
});
