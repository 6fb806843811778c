/**
 * Scalar reference quantizers by ggml type: one entry point over the per-format references
 * (the spec in code; the native kernels are tested against these).
 *
 * @module
 */
import { GgmlType, ggmlTypeName } from "../gguf/types.ts";
import type { QuantizeOptions } from "./common.ts";
import { dequantizeF16, quantizeF16 } from "./f16.ts";
import { dequantizeQ4_0, quantizeQ4_0 } from "./q4_0.ts";
import { dequantizeQ5_0, quantizeQ5_0 } from "./q5_0.ts";
import { dequantizeQ6_K, quantizeQ6_K } from "./q6_k.ts";
import { dequantizeQ8_0, quantizeQ8_0 } from "./q8_0.ts";
import { dequantizeQ8_K, quantizeQ8_K } from "./q8_k.ts";

/** Tensor types the scalar references can write and read. */
export const REFERENCE_TYPES: readonly GgmlType[] = [
  GgmlType.F32,
  GgmlType.F16,
  GgmlType.Q4_0,
  GgmlType.Q5_0,
  GgmlType.Q8_0,
  GgmlType.Q6_K,
  GgmlType.Q8_K,
];

/**
 * Encodes float values as ggml tensor bytes of `type` with the scalar reference (weights use
 * the reference Q8_0 rounding). Rows are independent, so a whole tensor is one flat array.
 *
 * @param type Target type: F32, F16, Q4_0, Q5_0, Q8_0, Q6_K or Q8_K.
 * @param x Values; length must be a multiple of the type's block size.
 * @param options `fused` for Q4_0/Q5_0 (see {@link quantizeQ4_0}); default true.
 * @returns The encoded bytes.
 * @throws {RangeError} If the type has no reference or the length is not whole blocks.
 *
 * @example Q4_0 of 32 values is one 18-byte block
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { GgmlType } from "../gguf/types.ts";
 * import { dequantize, quantize } from "./quantize.ts";
 * const bytes = quantize(GgmlType.Q4_0, new Float32Array(32).fill(1));
 * equal(bytes.length, 18);
 * equal(dequantize(GgmlType.Q4_0, bytes)[7], 1);
 * ```
 */
export function quantize(
  type: GgmlType,
  x: ArrayLike<number>,
  options: QuantizeOptions = {},
): Uint8Array {
  switch (type) {
    case GgmlType.F32: {
      const f = Float32Array.from(x);
      return new Uint8Array(f.buffer);
    }
    case GgmlType.F16:
      return quantizeF16(x);
    case GgmlType.Q4_0:
      return quantizeQ4_0(x, options);
    case GgmlType.Q5_0:
      return quantizeQ5_0(x, options);
    case GgmlType.Q8_0:
      return quantizeQ8_0(x);
    case GgmlType.Q6_K:
      return quantizeQ6_K(x);
    case GgmlType.Q8_K:
      return quantizeQ8_K(x);
    default:
      throw new RangeError(`No reference quantizer for ggml type ${ggmlTypeName(type)}`);
  }
}

/**
 * Decodes ggml tensor bytes of `type` to float32 with the scalar reference.
 *
 * @param type Source type: F32, F16, Q4_0, Q5_0, Q8_0, Q6_K or Q8_K.
 * @param bytes Whole blocks of that type.
 * @returns The values.
 * @throws {RangeError} If the type has no reference or the bytes are not whole blocks.
 *
 * @example F16 widens exactly
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * import { GgmlType } from "../gguf/types.ts";
 * import { dequantize } from "./quantize.ts";
 * deepEqual([...dequantize(GgmlType.F16, new Uint8Array([0x00, 0x3c]))], [1]);
 * ```
 */
export function dequantize(type: GgmlType, bytes: Uint8Array): Float32Array {
  switch (type) {
    case GgmlType.F32: {
      if (bytes.length % 4 !== 0) {
        throw new RangeError(`F32 data of ${bytes.length} bytes: expected a multiple of 4`);
      }
      const out = new Float32Array(bytes.length / 4);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    }
    case GgmlType.F16:
      return dequantizeF16(bytes);
    case GgmlType.Q4_0:
      return dequantizeQ4_0(bytes);
    case GgmlType.Q5_0:
      return dequantizeQ5_0(bytes);
    case GgmlType.Q8_0:
      return dequantizeQ8_0(bytes);
    case GgmlType.Q6_K:
      return dequantizeQ6_K(bytes);
    case GgmlType.Q8_K:
      return dequantizeQ8_K(bytes);
    default:
      throw new RangeError(`No reference dequantizer for ggml type ${ggmlTypeName(type)}`);
  }
}
