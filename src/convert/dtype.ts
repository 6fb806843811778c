/**
 * Element conversions the converter needs: any checkpoint float type to f32, and f32 to IEEE
 * binary16 with round-to-nearest-even exactly like numpy's `astype(np.float16)` (which is what
 * PowerInfer's converters call), including subnormals, overflow to infinity and NaN payloads.
 *
 * @module
 */

import { ConvertError } from "../errors.ts";
import { fp16FromF32Bits, fp16ToF32 } from "../quant/f16.ts";

/** Float element types checkpoints store (torch dtype names; safetensors maps onto these). */
export type SourceDType = "float32" | "float16" | "bfloat16" | "float64";

/** The f16 bit pattern of one f32 bit pattern, rounding to nearest even (numpy semantics). */
export function f16BitsFromF32Bits(f: number): number {
  const mant = f & 0x7fffff;
  if (((f >>> 23) & 0xff) === 0xff && mant !== 0) {
    // NaN, numpy's way (F16C would also set the quiet bit): keep the top mantissa bits, but
    // never turn into infinity. Every other value rounds exactly as the quantize reference.
    const h = 0x7c00 | (mant >>> 13);
    return ((f >>> 16) & 0x8000) | (h === 0x7c00 ? 0x7c01 : h);
  }
  return fp16FromF32Bits(f);
}

/**
 * Rounds f32 values to f16 (round to nearest even).
 *
 * @param src Values.
 * @returns Their f16 encodings, little-endian bytes.
 *
 * @example 1/3 rounds to the nearest f16
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { f32ToF16Bytes } from "./dtype.ts";
 * const b = f32ToF16Bytes(new Float32Array([1 / 3, 65520, 2 ** -25]));
 * const h = new Uint16Array(b.buffer);
 * equal(h[0], 0x3555);
 * equal(h[1], 0x7c00); // rounds up to infinity
 * equal(h[2], 0); // exactly half the smallest subnormal: ties to even (zero)
 * ```
 */
export function f32ToF16Bytes(src: Float32Array): Uint8Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < bits.length; i++) {
    const f = bits[i]!;
    const e = (f >>> 23) & 0xff;
    if (e > 112 && e < 143) {
      // Normal f16 range inline; a rounding carry may reach infinity, never the sign bit.
      const h = ((f >>> 16) & 0x8000) | ((e - 112) << 10) | ((f >>> 13) & 0x3ff);
      out[i] = (f & 0x1fff) + (h & 1) > 0x1000 ? h + 1 : h;
    } else out[i] = f16BitsFromF32Bits(f);
  }
  return new Uint8Array(out.buffer);
}

/** f16 bits to f32 (exact): the one scalar widening, from the quantize reference. */
export const f32FromF16Bits: (h: number) => number = fp16ToF32;

function aligned(data: Uint8Array, bytes: number): Uint8Array {
  return data.byteOffset % bytes === 0 ? data : data.slice();
}

/**
 * Widens checkpoint bytes of any float dtype to f32 (f64 rounds to nearest).
 *
 * @param data Little-endian element bytes.
 * @param dtype Their type.
 * @returns A new or shared Float32Array (shared only for f32 input already aligned).
 * @throws {ConvertError} For non-float dtypes.
 */
export function toF32(data: Uint8Array, dtype: string): Float32Array {
  switch (dtype) {
    case "float32": {
      const a = aligned(data, 4);
      return new Float32Array(a.buffer, a.byteOffset, a.byteLength / 4);
    }
    case "float16": {
      const a = aligned(data, 2);
      const h = new Uint16Array(a.buffer, a.byteOffset, a.byteLength / 2);
      const out = new Float32Array(h.length);
      // A 64k table makes f16 -> f32 one lookup per element.
      const table = f16Table();
      for (let i = 0; i < h.length; i++) out[i] = table[h[i]!]!;
      return out;
    }
    case "bfloat16": {
      const a = aligned(data, 2);
      const h = new Uint16Array(a.buffer, a.byteOffset, a.byteLength / 2);
      const out = new Uint32Array(h.length);
      for (let i = 0; i < h.length; i++) out[i] = h[i]! << 16;
      return new Float32Array(out.buffer);
    }
    case "float64": {
      const a = aligned(data, 8);
      return Float32Array.from(new Float64Array(a.buffer, a.byteOffset, a.byteLength / 8));
    }
  }
  throw new ConvertError(`Cannot convert ${dtype} tensor data to float: expected a float dtype`);
}

let F16_TABLE: Float32Array | undefined;
function f16Table(): Float32Array {
  if (!F16_TABLE) {
    F16_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) F16_TABLE[h] = f32FromF16Bits(h);
  }
  return F16_TABLE;
}
