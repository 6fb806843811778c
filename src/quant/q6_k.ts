/**
 * Q6_K, the scalar reference (shared/spec/q4_0.md §1-§3): super-blocks of 256 values in 16
 * sub-blocks of 16, each value a 6-bit code (4 low bits in `ql`, 2 high bits in `qh`), each
 * sub-block an int8 scale, the super-block an fp16 scale `d` stored last;
 * value = (d·scale)·(q - 32). PowerInfer's `quantize` writes LLaMA's `output.weight` this way.
 *
 * @module
 */
import { checkBlocks, countBlocks, nearestInt } from "./common.ts";
import { fp16FromF32, fp16ToF32 } from "./f16.ts";

/** Values per Q6_K super-block. */
export const QK_K = 256;
/** Bytes per Q6_K super-block: ql 128, qh 64, scales 16, fp16 d. */
export const BLOCK_Q6_K_BYTES = 210;

const F = Math.fround;
const TENTH = F(0.1);

/** Sum of (w·x)·l and (w·l)·l with w = x², in float32, in order. */
function sums(
  x: ArrayLike<number>,
  o: number,
  iscale: number,
  nmax: number,
): [number, number] {
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < 16; i++) {
    const v = x[o + i]!;
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(F(iscale * v))));
    const w = F(v * v);
    sumlx = F(sumlx + F(F(w * v) * l));
    suml2 = F(suml2 + F(F(w * l) * l));
  }
  return [sumlx, suml2];
}

function setCodes(
  x: ArrayLike<number>,
  o: number,
  iscale: number,
  nmax: number,
  L: Uint8Array,
  lo: number,
): void {
  for (let i = 0; i < 16; i++) {
    L[lo + i] = nmax + Math.max(-nmax, Math.min(nmax - 1, nearestInt(F(iscale * x[o + i]!))));
  }
}

/**
 * ggml's `make_qx_quants` for 16 values with weights x²: picks the scale (and the codes
 * L = l + nmax, written to `L[lo..lo+16)`) minimizing the weighted error over 19 trial scales.
 */
function makeQx(x: ArrayLike<number>, o: number, nmax: number, L: Uint8Array, lo: number): number {
  let amax = 0;
  let max = 0;
  for (let i = 0; i < 16; i++) {
    const a = Math.abs(x[o + i]!);
    if (a > amax) {
      amax = a;
      max = x[o + i]!;
    }
  }
  if (amax < F(1e-30)) {
    L.fill(0, lo, lo + 16);
    return 0;
  }
  let iscale = F(-nmax / max);
  setCodes(x, o, iscale, nmax, L, lo);
  let [sumlx, suml2] = sums(x, o, iscale, nmax);
  let scale = F(sumlx / suml2);
  let best = F(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = F(-F(nmax + F(TENTH * is)) / max);
    [sumlx, suml2] = sums(x, o, iscale, nmax);
    if (suml2 > 0 && F(sumlx * sumlx) > F(best * suml2)) {
      setCodes(x, o, iscale, nmax, L, lo);
      scale = F(sumlx / suml2);
      best = F(scale * sumlx);
    }
  }
  return scale;
}

/**
 * Packs `x` into Q6_K super-blocks like ggml's reference (weighted least-squares sub-block
 * scales, then codes re-derived from the rounded scales). All-zero super-blocks are 210 zero
 * bytes. Float operations are float32, unfused (the portable reference of the spec).
 *
 * @param x Values to quantize; length must be a multiple of 256.
 * @returns 210 bytes per 256 values.
 * @throws {RangeError} If `x.length` is not a multiple of 256.
 *
 * @example Round trip error stays within a sub-block step
 * ```ts
 * import { ok } from "node:assert/strict";
 * import { dequantizeQ6_K, quantizeQ6_K } from "./q6_k.ts";
 * const x = Float32Array.from({ length: 256 }, (_, i) => Math.sin(i / 3));
 * const y = dequantizeQ6_K(quantizeQ6_K(x));
 * ok(y.every((v, i) => Math.abs(v - x[i]!) < 0.05));
 * ```
 */
export function quantizeQ6_K(x: ArrayLike<number>): Uint8Array {
  checkBlocks("Q6_K input", x.length, QK_K);
  const nb = x.length / QK_K;
  const out = new Uint8Array(nb * BLOCK_Q6_K_BYTES);
  const L = new Uint8Array(QK_K);
  const scales = new Float32Array(16);
  for (let b = 0; b < nb; b++) {
    const o = b * QK_K;
    const p = b * BLOCK_Q6_K_BYTES;
    let maxScale = 0;
    let maxAbsScale = 0;
    for (let ib = 0; ib < 16; ib++) {
      const s = makeQx(x, o + 16 * ib, 32, L, 16 * ib);
      scales[ib] = s;
      if (Math.abs(s) > maxAbsScale) {
        maxAbsScale = Math.abs(s);
        maxScale = s;
      }
    }
    if (maxAbsScale === 0) continue; // all 210 bytes zero (d = +0)
    const iscale = F(-128 / maxScale);
    const d = fp16FromF32(F(1 / iscale));
    const df = fp16ToF32(d);
    const sc = new Int8Array(16);
    for (let ib = 0; ib < 16; ib++) {
      sc[ib] = Math.min(127, nearestInt(F(iscale * scales[ib]!)));
    }
    for (let j = 0; j < 16; j++) {
      const dj = F(df * sc[j]!);
      if (dj === 0) continue;
      for (let i = 0; i < 16; i++) {
        const l = nearestInt(F(x[o + 16 * j + i]! / dj));
        L[16 * j + i] = Math.max(-32, Math.min(31, l)) + 32;
      }
    }
    for (let h = 0; h < 2; h++) {
      const ql = p + 64 * h;
      const qh = p + 128 + 32 * h;
      const e = 128 * h;
      for (let l = 0; l < 32; l++) {
        out[ql + l] = (L[e + l]! & 15) | ((L[e + l + 64]! & 15) << 4);
        out[ql + l + 32] = (L[e + l + 32]! & 15) | ((L[e + l + 96]! & 15) << 4);
        out[qh + l] = (L[e + l]! >> 4) | ((L[e + l + 32]! >> 4) << 2) |
          ((L[e + l + 64]! >> 4) << 4) | ((L[e + l + 96]! >> 4) << 6);
      }
    }
    for (let ib = 0; ib < 16; ib++) out[p + 192 + ib] = sc[ib]! & 0xff;
    out[p + 208] = d & 0xff;
    out[p + 209] = d >>> 8;
  }
  return out;
}

/**
 * Expands Q6_K super-blocks to float32: `(d·scale)·(q - 32)`.
 *
 * @param bytes Whole Q6_K super-blocks (210 bytes each).
 * @returns 256 values per super-block.
 * @throws {RangeError} If `bytes.length` is not a multiple of 210.
 *
 * @example An all-zero super-block is zeros
 * ```ts
 * import { ok } from "node:assert/strict";
 * import { dequantizeQ6_K } from "./q6_k.ts";
 * ok(dequantizeQ6_K(new Uint8Array(210)).every((v) => v === 0));
 * ```
 */
export function dequantizeQ6_K(bytes: Uint8Array): Float32Array {
  const nb = countBlocks("Q6_K", bytes, BLOCK_Q6_K_BYTES);
  const out = new Float32Array(nb * QK_K);
  for (let b = 0; b < nb; b++) {
    const p = b * BLOCK_Q6_K_BYTES;
    const d = fp16ToF32(bytes[p + 208]! | (bytes[p + 209]! << 8));
    for (let h = 0; h < 2; h++) {
      const ql = p + 64 * h;
      const qh = p + 128 + 32 * h;
      const sc = p + 192 + 8 * h;
      const y = b * QK_K + 128 * h;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const hb = bytes[qh + l]!;
        const q1 = (bytes[ql + l]! & 0xf) | ((hb & 3) << 4);
        const q2 = (bytes[ql + l + 32]! & 0xf) | (((hb >> 2) & 3) << 4);
        const q3 = (bytes[ql + l]! >> 4) | (((hb >> 4) & 3) << 4);
        const q4 = (bytes[ql + l + 32]! >> 4) | (((hb >> 6) & 3) << 4);
        const s = (k: number) => F(d * ((bytes[sc + is + k]! << 24) >> 24));
        out[y + l] = s(0) * (q1 - 32);
        out[y + l + 32] = s(2) * (q2 - 32);
        out[y + l + 64] = s(4) * (q3 - 32);
        out[y + l + 96] = s(6) * (q4 - 32);
      }
    }
  }
  return out;
}
