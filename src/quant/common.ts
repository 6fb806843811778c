/**
 * Helpers shared by the scalar quantizer references (shared/spec/q4_0.md §3). Every float
 * operation is rounded to float32 with `Math.fround`, one operation at a time, like the C
 * reference compiled without fused multiply-add.
 *
 * @module
 */

/**
 * Signed value of the element with the largest |x| in `x[o..o+n)`; scanning in order and
 * replacing only on a strictly greater |x|, so the first one wins ties. 0 when all are 0.
 */
export function signedAbsMax(x: ArrayLike<number>, o: number, n: number): number {
  let amax = 0;
  let m = 0;
  for (let j = 0; j < n; j++) {
    const v = x[o + j]!;
    const a = Math.abs(v);
    if (a > amax) {
      amax = a;
      m = v;
    }
  }
  return m;
}

/**
 * ggml's `nearest_int`: adds 1.5·2^23 in float32 (rounding half to even onto the integer grid)
 * and reads the integer back from the low 23 bits, exactly as the C bit trick does (so inputs
 * outside |v| < 2^22, and NaN, give the same numbers the C code gives).
 */
export function nearestInt(v: number): number {
  NI_F32[0] = v + 12582912;
  return (NI_U32[0]! & 0x007fffff) - 0x00400000;
}

const NI_F32 = new Float32Array(1);
const NI_U32 = new Uint32Array(NI_F32.buffer);

/** C's `roundf`: to nearest, halves away from zero. */
export function roundHalfAway(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

/** Round half to even (`_mm256_round_ps` with `_MM_ROUND_NEAREST`, numpy `round`). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v); // halves go up
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Throws unless `n` is a whole number of blocks. */
export function checkBlocks(what: string, n: number, blockSize: number): void {
  if (n % blockSize !== 0) {
    throw new RangeError(`${what} of ${n} values: expected a multiple of ${blockSize}`);
  }
}

/** Throws unless `bytes` holds whole blocks; returns the block count. */
export function countBlocks(what: string, bytes: Uint8Array, blockBytes: number): number {
  if (bytes.length % blockBytes !== 0) {
    throw new RangeError(
      `${what} data of ${bytes.length} bytes: expected a multiple of ${blockBytes}`,
    );
  }
  return bytes.length / blockBytes;
}

const NEXT_F32 = new Float32Array(1);
const NEXT_U32 = new Uint32Array(NEXT_F32.buffer);

/** The float32 next to the finite float32 `r`, one step toward `s`. */
function stepToward(r: number, s: number): number {
  NEXT_F32[0] = r;
  // Positive floats grow with their bits, negative ones shrink; zero steps to ±min subnormal.
  if (r === 0) return s > 0 ? 2 ** -149 : -(2 ** -149);
  NEXT_U32[0] = (s > r) === (r > 0) ? NEXT_U32[0]! + 1 : NEXT_U32[0]! - 1;
  return NEXT_F32[0]!;
}

/**
 * C's `fmaf(a, b, c)` for float32 inputs: a·b + c with one rounding to float32. The product of
 * two float32 is exact in a double; the sum is computed with its exact error (TwoSum) so the one
 * case where rounding the double sum again would be wrong (it lands on a float32 midpoint) is
 * decided by the error's sign.
 */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = Math.fround(s);
  if (r === s || !Number.isFinite(s)) return r;
  const bv = s - p;
  const err = (p - (s - bv)) + (c - bv);
  if (err === 0) return r;
  const other = stepToward(r, s);
  if (s !== (r + other) / 2) return r; // not a midpoint: the double rounding is harmless
  return (err > 0) === (other > r) ? other : r;
}

/** `a·b + c` in float32: one rounding when `fused`, else the product is rounded first. */
export function mulAdd(a: number, b: number, c: number, fused: boolean): number {
  return fused ? fmaf(a, b, c) : Math.fround(Math.fround(a * b) + c);
}

/** Options of the Q4_0 / Q5_0 references. */
export interface QuantizeOptions {
  /**
   * Evaluate `x·id + offset` as one fused multiply-add (default true), matching PowerInfer's
   * GCC-built x86 `quantize`; false rounds the product first (the spec's portable text).
   */
  fused?: boolean;
}
