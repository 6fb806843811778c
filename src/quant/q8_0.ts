/**
 * Q8_0, the scalar reference (shared/spec/q4_0.md §1-§3): blocks of 32 values stored as an fp16
 * scale `d` and 32 int8 codes; value = q·d. Two quantizers exist in PowerInfer: the reference
 * one used when writing weights, and the x86 AVX2 one used for activations.
 *
 * @module
 */
import { checkBlocks, countBlocks, roundHalfAway, roundHalfEven } from "./common.ts";
import { fp16FromF32, fp16ToF32 } from "./f16.ts";

/** Values per Q8_0 block. */
export const QK8_0 = 32;
/** Bytes per Q8_0 block: fp16 scale + 32 int8. */
export const BLOCK_Q8_0_BYTES = 34;

function quantize(x: ArrayLike<number>, activation: boolean): Uint8Array {
  checkBlocks("Q8_0 input", x.length, QK8_0);
  const nb = x.length / QK8_0;
  const out = new Uint8Array(nb * BLOCK_Q8_0_BYTES);
  for (let b = 0; b < nb; b++) {
    const o = b * QK8_0;
    const p = b * BLOCK_Q8_0_BYTES;
    let amax = 0;
    for (let j = 0; j < QK8_0; j++) amax = Math.max(amax, Math.abs(x[o + j]!));
    const d = Math.fround(amax / 127);
    // The reference multiplies by 1/d and rounds halves away from zero; the AVX2 activation
    // path multiplies by 127/amax and rounds halves to even.
    const id = activation
      ? (amax !== 0 ? Math.fround(127 / amax) : 0)
      : (d !== 0 ? Math.fround(1 / d) : 0);
    const h = fp16FromF32(d);
    out[p] = h & 0xff;
    out[p + 1] = h >>> 8;
    for (let j = 0; j < QK8_0; j++) {
      const v = Math.fround(x[o + j]! * id);
      out[p + 2 + j] = (activation ? roundHalfEven(v) : roundHalfAway(v)) & 0xff;
    }
  }
  return out;
}

/**
 * Packs `x` into Q8_0 blocks with ggml's reference rounding (the one `quantize` uses for
 * weights): `d = amax/127`, `q = roundf(x·(1/d))`, halves away from zero.
 *
 * @param x Values to quantize; length must be a multiple of 32.
 * @returns 34 bytes per 32 values.
 * @throws {RangeError} If `x.length` is not a multiple of 32.
 *
 * @example The largest magnitude maps to ±127
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { quantizeQ8_0 } from "./q8_0.ts";
 * const x = new Float32Array(32);
 * x[3] = -2.5;
 * x[4] = 1.25;
 * const q = new Int8Array(quantizeQ8_0(x).buffer, 2, 32);
 * equal(q[3], -127);
 * equal(q[4], 64); // 63.5 rounds away from zero
 * ```
 */
export function quantizeQ8_0(x: ArrayLike<number>): Uint8Array {
  return quantize(x, false);
}

/**
 * Packs `x` into Q8_0 blocks the way PowerInfer's x86 AVX2 path quantizes activations before a
 * Q4_0/Q8_0 dot product: `d = amax/127` stored fp16, multiplier `127/amax`, halves to even.
 *
 * @param x Values to quantize; length must be a multiple of 32.
 * @returns 34 bytes per 32 values.
 * @throws {RangeError} If `x.length` is not a multiple of 32.
 *
 * @example Ties round to even, unlike the reference
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { quantizeQ8_0Activation } from "./q8_0.ts";
 * const x = new Float32Array(32);
 * x[0] = 2.5;
 * x[1] = 1.25;
 * equal(new Int8Array(quantizeQ8_0Activation(x).buffer, 2, 32)[1], 64); // 63.5 -> 64 (even)
 * ```
 */
export function quantizeQ8_0Activation(x: ArrayLike<number>): Uint8Array {
  return quantize(x, true);
}

/**
 * Expands Q8_0 blocks to float32: `q·d`.
 *
 * @param bytes Whole Q8_0 blocks (34 bytes each).
 * @returns 32 values per block.
 * @throws {RangeError} If `bytes.length` is not a multiple of 34.
 *
 * @example Round trip within half a step
 * ```ts
 * import { ok } from "node:assert/strict";
 * import { dequantizeQ8_0, quantizeQ8_0 } from "./q8_0.ts";
 * const x = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
 * const y = dequantizeQ8_0(quantizeQ8_0(x));
 * ok(y.every((v, i) => Math.abs(v - x[i]!) <= 0.5 / 127 + 1e-3));
 * ```
 */
export function dequantizeQ8_0(bytes: Uint8Array): Float32Array {
  const nb = countBlocks("Q8_0", bytes, BLOCK_Q8_0_BYTES);
  const out = new Float32Array(nb * QK8_0);
  for (let b = 0; b < nb; b++) {
    const p = b * BLOCK_Q8_0_BYTES;
    const d = fp16ToF32(bytes[p]! | (bytes[p + 1]! << 8));
    for (let j = 0; j < QK8_0; j++) out[b * QK8_0 + j] = ((bytes[p + 2 + j]! << 24) >> 24) * d;
  }
  return out;
}
