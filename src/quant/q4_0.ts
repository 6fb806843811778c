/**
 * Q4_0, the scalar reference (shared/spec/q4_0.md §1-§3): blocks of 32 values stored as an fp16
 * scale `d` and 16 bytes of 4-bit codes; element j is the low nibble of qs[j], element j+16 the
 * high nibble; value = (q - 8)·d.
 *
 * @module
 */
import { checkBlocks, countBlocks, mulAdd, type QuantizeOptions, signedAbsMax } from "./common.ts";
import { fp16FromF32, fp16ToF32 } from "./f16.ts";

/** Values per Q4_0 block. */
export const QK4_0 = 32;
/** Bytes per Q4_0 block: fp16 scale + 16 nibble bytes. */
export const BLOCK_Q4_0_BYTES = 18;

/**
 * Packs `x` into Q4_0 blocks (f16 scale + 16 nibble bytes), bit for bit like PowerInfer's
 * `quantize`: `d = m / -8` where m is the first element of largest |x|,
 * `q = min(15, trunc(x·(1/d) + 8.5))`.
 *
 * PowerInfer's x86 binaries are built by GCC with FMA enabled, which fuses `x·(1/d) + 8.5` into
 * one fused multiply-add (a single rounding); its Q4_0 files carry those bits (a few codes per
 * million differ from the unfused formula). That is the default here; `{ fused: false }` rounds
 * the product first, as the spec's portable text (q4_0.md §3) reads.
 *
 * @param x Values to quantize; length must be a multiple of 32.
 * @param options `fused` (default true): evaluate `x·id + 8.5` with one rounding.
 * @returns 18 bytes per 32 values.
 * @throws {RangeError} If `x.length` is not a multiple of 32.
 *
 * @example Round trip stays within half a step
 * ```ts
 * import { ok } from "node:assert/strict";
 * import { dequantizeQ4_0, quantizeQ4_0 } from "./q4_0.ts";
 * const x = Float32Array.from({ length: 32 }, (_, i) => i - 16);
 * const y = dequantizeQ4_0(quantizeQ4_0(x));
 * ok(y.every((v, i) => Math.abs(v - x[i]!) <= 1));
 * ```
 */
export function quantizeQ4_0(x: ArrayLike<number>, options: QuantizeOptions = {}): Uint8Array {
  const fused = options.fused ?? true;
  checkBlocks("Q4_0 input", x.length, QK4_0);
  const nb = x.length / QK4_0;
  const out = new Uint8Array(nb * BLOCK_Q4_0_BYTES);
  for (let b = 0; b < nb; b++) {
    const o = b * QK4_0;
    const p = b * BLOCK_Q4_0_BYTES;
    const d = Math.fround(signedAbsMax(x, o, QK4_0) / -8);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const h = fp16FromF32(d);
    out[p] = h & 0xff;
    out[p + 1] = h >>> 8;
    for (let j = 0; j < 16; j++) {
      const qa = Math.min(15, Math.trunc(mulAdd(x[o + j]!, id, 8.5, fused)));
      const qc = Math.min(15, Math.trunc(mulAdd(x[o + j + 16]!, id, 8.5, fused)));
      out[p + 2 + j] = qa | (qc << 4);
    }
  }
  return out;
}

/**
 * Expands Q4_0 blocks to float32: `(q - 8)·d`.
 *
 * @param bytes Whole Q4_0 blocks (18 bytes each).
 * @returns 32 values per block.
 * @throws {RangeError} If `bytes.length` is not a multiple of 18.
 *
 * @example One hand-written block
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { dequantizeQ4_0 } from "./q4_0.ts";
 * const block = new Uint8Array(18);
 * block[1] = 0x3c; // d = 1.0
 * block[2] = 0xf0; // element 0 -> q 0, element 16 -> q 15
 * const y = dequantizeQ4_0(block);
 * equal(y[0], -8);
 * equal(y[16], 7);
 * equal(y[1], -8);
 * ```
 */
export function dequantizeQ4_0(bytes: Uint8Array): Float32Array {
  const nb = countBlocks("Q4_0", bytes, BLOCK_Q4_0_BYTES);
  const out = new Float32Array(nb * QK4_0);
  for (let b = 0; b < nb; b++) {
    const p = b * BLOCK_Q4_0_BYTES;
    const d = fp16ToF32(bytes[p]! | (bytes[p + 1]! << 8));
    for (let j = 0; j < 16; j++) {
      const q = bytes[p + 2 + j]!;
      out[b * QK4_0 + j] = ((q & 0xf) - 8) * d;
      out[b * QK4_0 + j + 16] = ((q >>> 4) - 8) * d;
    }
  }
  return out;
}
