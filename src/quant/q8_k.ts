/**
 * Q8_K, the scalar reference (shared/spec/q4_0.md §1, §3): blocks of 256 values stored as an f32
 * scale `d`, 256 int8 codes and 16 int16 sums of each group of 16 codes. Only an in-memory
 * activation format (the other operand of Q6_K dot products); never stored in files.
 *
 * @module
 */
import { checkBlocks, countBlocks, nearestInt, signedAbsMax } from "./common.ts";

/** Values per Q8_K block. */
export const QK_K = 256;
/** Bytes per Q8_K block: f32 scale, 256 int8, 16 int16 sums. */
export const BLOCK_Q8_K_BYTES = 292;

/**
 * Packs `x` into Q8_K blocks like ggml: `iscale = -128/m` (m the first element of largest |x|),
 * `q = min(127, nearest_int(iscale·x))`, `d = 1/iscale`.
 *
 * @param x Values to quantize; length must be a multiple of 256.
 * @returns 292 bytes per 256 values.
 * @throws {RangeError} If `x.length` is not a multiple of 256.
 *
 * @example The extreme element maps to -128 and bsums add the codes
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { quantizeQ8_K } from "./q8_k.ts";
 * const x = new Float32Array(256);
 * x[5] = 2;
 * x[6] = -1;
 * const bytes = quantizeQ8_K(x);
 * const view = new DataView(bytes.buffer);
 * equal(view.getFloat32(0, true), -2 / 128);
 * equal(view.getInt8(4 + 5), -128);
 * equal(view.getInt8(4 + 6), 64);
 * equal(view.getInt16(260, true), -64);
 * ```
 */
export function quantizeQ8_K(x: ArrayLike<number>): Uint8Array {
  checkBlocks("Q8_K input", x.length, QK_K);
  const nb = x.length / QK_K;
  const out = new Uint8Array(nb * BLOCK_Q8_K_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    const o = b * QK_K;
    const p = b * BLOCK_Q8_K_BYTES;
    const m = signedAbsMax(x, o, QK_K);
    if (m === 0) continue; // d = 0, codes and sums 0
    const iscale = Math.fround(-128 / m);
    for (let g = 0; g < 16; g++) {
      let sum = 0;
      for (let j = 0; j < 16; j++) {
        const q = Math.min(127, nearestInt(Math.fround(iscale * x[o + 16 * g + j]!)));
        view.setInt8(p + 4 + 16 * g + j, q);
        sum += q;
      }
      view.setInt16(p + 260 + 2 * g, sum, true);
    }
    view.setFloat32(p, Math.fround(1 / iscale), true);
  }
  return out;
}

/**
 * Expands Q8_K blocks to float32: `d·q`.
 *
 * @param bytes Whole Q8_K blocks (292 bytes each).
 * @returns 256 values per block.
 * @throws {RangeError} If `bytes.length` is not a multiple of 292.
 *
 * @example Round trip within one step
 * ```ts
 * import { ok } from "node:assert/strict";
 * import { dequantizeQ8_K, quantizeQ8_K } from "./q8_k.ts";
 * const x = Float32Array.from({ length: 256 }, (_, i) => Math.cos(i));
 * const y = dequantizeQ8_K(quantizeQ8_K(x));
 * ok(y.every((v, i) => Math.abs(v - x[i]!) <= 1 / 128)); // -m clamps from 128 to 127
 * ```
 */
export function dequantizeQ8_K(bytes: Uint8Array): Float32Array {
  const nb = countBlocks("Q8_K", bytes, BLOCK_Q8_K_BYTES);
  const out = new Float32Array(nb * QK_K);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < nb; b++) {
    const d = view.getFloat32(b * BLOCK_Q8_K_BYTES, true);
    for (let j = 0; j < QK_K; j++) {
      out[b * QK_K + j] = d * view.getInt8(b * BLOCK_Q8_K_BYTES + 4 + j);
    }
  }
  return out;
}
