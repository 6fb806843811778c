/**
 * Q5_0, the scalar reference (shared/spec/q4_0.md §1-§3): blocks of 32 values stored as an fp16
 * scale `d`, 4 bytes `qh` (bit j = 5th bit of element j, one u32 little-endian) and 16 bytes of
 * low nibbles laid out as in Q4_0; value = (v - 16)·d. PowerInfer's `quantize` writes the
 * predictor matrices (fc1/fc2) this way when the target type is not Q4_0.
 *
 * @module
 */
import { checkBlocks, countBlocks, mulAdd, type QuantizeOptions, signedAbsMax } from "./common.ts";
import { fp16FromF32, fp16ToF32 } from "./f16.ts";

/** Values per Q5_0 block. */
export const QK5_0 = 32;
/** Bytes per Q5_0 block: fp16 scale, 4 bytes of high bits, 16 nibble bytes. */
export const BLOCK_Q5_0_BYTES = 22;

/**
 * Packs `x` into Q5_0 blocks like ggml's reference: `d = m / -16` where m is the first element
 * of largest |x|, `v = min(31, trunc(x·(1/d) + 16.5))`. By default `x·(1/d) + 16.5` is one fused
 * multiply-add, as in PowerInfer's GCC-built x86 binaries (the same pattern as Q4_0, whose
 * fixture pins it); `{ fused: false }` gives the spec's unfused text.
 *
 * @param x Values to quantize; length must be a multiple of 32.
 * @param options `fused` (default true): evaluate `x·id + 16.5` with one rounding.
 * @returns 22 bytes per 32 values.
 * @throws {RangeError} If `x.length` is not a multiple of 32.
 *
 * @example Round trip within half a step
 * ```ts
 * import { ok } from "node:assert/strict";
 * import { dequantizeQ5_0, quantizeQ5_0 } from "./q5_0.ts";
 * const x = Float32Array.from({ length: 32 }, (_, i) => i - 16);
 * const y = dequantizeQ5_0(quantizeQ5_0(x));
 * ok(y.every((v, i) => Math.abs(v - x[i]!) <= 0.5));
 * ```
 */
export function quantizeQ5_0(x: ArrayLike<number>, options: QuantizeOptions = {}): Uint8Array {
  const fused = options.fused ?? true;
  checkBlocks("Q5_0 input", x.length, QK5_0);
  const nb = x.length / QK5_0;
  const out = new Uint8Array(nb * BLOCK_Q5_0_BYTES);
  for (let b = 0; b < nb; b++) {
    const o = b * QK5_0;
    const p = b * BLOCK_Q5_0_BYTES;
    const d = Math.fround(signedAbsMax(x, o, QK5_0) / -16);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const h = fp16FromF32(d);
    out[p] = h & 0xff;
    out[p + 1] = h >>> 8;
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const qa = Math.min(31, Math.trunc(mulAdd(x[o + j]!, id, 16.5, fused)));
      const qc = Math.min(31, Math.trunc(mulAdd(x[o + j + 16]!, id, 16.5, fused)));
      out[p + 6 + j] = (qa & 0xf) | ((qc & 0xf) << 4);
      qh |= ((qa >>> 4) << j) | ((qc >>> 4) << (j + 16));
    }
    out[p + 2] = qh & 0xff;
    out[p + 3] = (qh >>> 8) & 0xff;
    out[p + 4] = (qh >>> 16) & 0xff;
    out[p + 5] = (qh >>> 24) & 0xff;
  }
  return out;
}

/**
 * Expands Q5_0 blocks to float32: `(v - 16)·d`.
 *
 * @param bytes Whole Q5_0 blocks (22 bytes each).
 * @returns 32 values per block.
 * @throws {RangeError} If `bytes.length` is not a multiple of 22.
 *
 * @example One hand-written block
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { dequantizeQ5_0 } from "./q5_0.ts";
 * const block = new Uint8Array(22);
 * block[1] = 0x3c; // d = 1.0
 * block[5] = 0x80; // qh bit 31: element 31 gets its 5th bit
 * block[21] = 0xf0; // element 15 low nibble 0, element 31 low nibble 15
 * const y = dequantizeQ5_0(block);
 * equal(y[15], -16);
 * equal(y[31], 15);
 * ```
 */
export function dequantizeQ5_0(bytes: Uint8Array): Float32Array {
  const nb = countBlocks("Q5_0", bytes, BLOCK_Q5_0_BYTES);
  const out = new Float32Array(nb * QK5_0);
  for (let b = 0; b < nb; b++) {
    const p = b * BLOCK_Q5_0_BYTES;
    const d = fp16ToF32(bytes[p]! | (bytes[p + 1]! << 8));
    const qh =
      (bytes[p + 2]! | (bytes[p + 3]! << 8) | (bytes[p + 4]! << 16) | (bytes[p + 5]! << 24)) >>> 0;
    for (let j = 0; j < 16; j++) {
      const q = bytes[p + 6 + j]!;
      const lo = (q & 0xf) | (((qh >>> j) & 1) << 4);
      const hi = (q >>> 4) | (((qh >>> (j + 16)) & 1) << 4);
      out[b * QK5_0 + j] = (lo - 16) * d;
      out[b * QK5_0 + j + 16] = (hi - 16) * d;
    }
  }
  return out;
}
