/**
 * IEEE binary16 ("fp16") conversion, the scalar reference (shared/spec/q4_0.md intro): f32 to
 * fp16 rounds to nearest, ties to even (F16C `cvtps2ph` mode 0); fp16 to f32 is exact.
 *
 * @module
 */

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/**
 * Rounds a number to float32 and then to fp16 (round to nearest, ties to even) and returns the
 * 16 bits. NaN keeps its sign and becomes a quiet NaN carrying the top payload bits, like F16C.
 *
 * @param x Value to convert (first rounded to float32).
 * @returns The fp16 bit pattern (0..65535).
 *
 * @example Rounding to nearest even
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { fp16FromF32 } from "./f16.ts";
 * equal(fp16FromF32(1), 0x3c00);
 * equal(fp16FromF32(-2), 0xc000);
 * equal(fp16FromF32(1 + 2 ** -11), 0x3c00); // a tie rounds to the even mantissa
 * equal(fp16FromF32(65520), 0x7c00); // overflows to infinity
 * ```
 */
export function fp16FromF32(x: number): number {
  F32[0] = x;
  return fp16FromF32Bits(U32[0]!);
}

/**
 * {@linkcode fp16FromF32} on a float32 bit pattern (no NaN canonicalisation on the way in).
 *
 * @param bits The float32 bits (0..2^32-1).
 * @returns The fp16 bit pattern.
 *
 * @example 1.0
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { fp16FromF32Bits } from "./f16.ts";
 * equal(fp16FromF32Bits(0x3f800000), 0x3c00);
 * ```
 */
export function fp16FromF32Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // fp16 subnormal (unit 2^-24) or zero: round the 24-bit significand shifted into place.
    if (e < -10) return sign;
    const sig = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rem = sig & ((1 << shift) - 1);
    let q = sig >>> shift;
    if (rem > half || (rem === half && (q & 1) === 1)) q++;
    return sign | q; // q = 0x400 is the smallest normal, still the right encoding
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // a carry may reach infinity
  return sign | h;
}

/**
 * Widens fp16 bits to the number they encode (exact).
 *
 * @param h fp16 bit pattern (0..65535).
 * @returns The value (a float32-representable number, ±Infinity or NaN).
 *
 * @example Normal, subnormal and infinity
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { fp16ToF32 } from "./f16.ts";
 * equal(fp16ToF32(0x3c00), 1);
 * equal(fp16ToF32(0x0001), 2 ** -24);
 * equal(fp16ToF32(0xfc00), -Infinity);
 * ```
 */
export function fp16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/**
 * Converts values to fp16, little-endian, 2 bytes per value (the F16 tensor layout).
 *
 * @param x Values to convert.
 * @returns `2 * x.length` bytes.
 *
 * @example Two values
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * import { quantizeF16 } from "./f16.ts";
 * deepEqual([...quantizeF16(new Float32Array([1, -0.5]))], [0x00, 0x3c, 0x00, 0xb8]);
 * ```
 */
export function quantizeF16(x: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(x.length * 2);
  for (let i = 0; i < x.length; i++) {
    const h = fp16FromF32(x[i]!);
    out[2 * i] = h & 0xff;
    out[2 * i + 1] = h >>> 8;
  }
  return out;
}

/**
 * Widens little-endian fp16 bytes to float32 (exact).
 *
 * @param bytes An even number of bytes.
 * @returns `bytes.length / 2` values.
 * @throws {RangeError} If `bytes.length` is odd.
 *
 * @example Round trip of representable values
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * import { dequantizeF16, quantizeF16 } from "./f16.ts";
 * deepEqual([...dequantizeF16(quantizeF16([0.25, -3, 1024]))], [0.25, -3, 1024]);
 * ```
 */
export function dequantizeF16(bytes: Uint8Array): Float32Array {
  if (bytes.length % 2 !== 0) {
    throw new RangeError(`F16 data of ${bytes.length} bytes: expected an even count`);
  }
  const out = new Float32Array(bytes.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = fp16ToF32(bytes[2 * i]! | (bytes[2 * i + 1]! << 8));
  return out;
}
