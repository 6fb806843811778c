// Scalar references of the block formats (src/quant/) against hand-written blocks, PowerInfer's
// own Q4_0 bits, and the native kernels (kernels/cpu/quant.c) bit for bit.
import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import {
  dequantizeRows,
  quantizeQ8_0Act,
  quantizeQ8_KAct,
  quantizeRows,
  quantizeRowsAsync,
  setThreads,
} from "../ffi/ops.ts";
import { GgmlType, ggmlTypeName } from "../src/gguf/types.ts";
import { fmaf, nearestInt } from "../src/quant/common.ts";
import { fp16FromF32, fp16ToF32 } from "../src/quant/f16.ts";
import { dequantizeQ4_0, quantizeQ4_0 } from "../src/quant/q4_0.ts";
import { dequantizeQ5_0, quantizeQ5_0 } from "../src/quant/q5_0.ts";
import { dequantizeQ6_K, quantizeQ6_K } from "../src/quant/q6_k.ts";
import { quantizeQ8_0, quantizeQ8_0Activation } from "../src/quant/q8_0.ts";
import { quantizeQ8_K } from "../src/quant/q8_k.ts";
import { dequantize, quantize } from "../src/quant/quantize.ts";
import { seededRandom } from "./_helpers.ts";

/** Bytes equal, or a message with the first differing byte (and its block). */
function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string, blockBytes = 1) {
  equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      throw new Error(
        `${what}: byte ${i} (block ${Math.floor(i / blockBytes)}) is ${actual[i]}, expected ${
          expected[i]
        }`,
      );
    }
  }
}

/** Seeded test values: mixed magnitudes, exact ties, zero blocks and repeated extremes. */
function testValues(n: number, seed: number): Float32Array {
  const rnd = seededRandom(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const block = Math.floor(i / 32);
    const kind = block % 7;
    if (kind === 3) x[i] = 0; // an all-zero block
    else if (kind === 5) x[i] = Math.round((rnd() - 0.5) * 32) / 4; // many ties and equal |x|
    else x[i] = (rnd() - 0.5) * 10 ** (rnd() * 4 - 2);
  }
  return x;
}

const BLOCK_BYTES: Record<number, number> = { 0: 4, 1: 2, 2: 18, 6: 22, 8: 34, 14: 210 };
const NATIVE_TYPES = [
  GgmlType.F32,
  GgmlType.F16,
  GgmlType.Q4_0,
  GgmlType.Q5_0,
  GgmlType.Q8_0,
  GgmlType.Q6_K,
];

Deno.test("fp16FromF32() matches Float16Array rounding on a sweep of f32 bit patterns", () => {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const h = new Float16Array(1);
  const hu = new Uint16Array(h.buffer);
  for (let bits = 0; bits < 2 ** 32; bits += 65521) {
    u[0] = bits;
    if (Number.isNaN(f[0]!)) continue;
    h[0] = f[0]!;
    if (fp16FromF32(f[0]!) !== hu[0]) {
      throw new Error(`0x${bits.toString(16)}: ${fp16FromF32(f[0]!)} != ${hu[0]}`);
    }
  }
  for (let b = 0; b < 65536; b++) {
    hu[0] = b;
    ok(Object.is(fp16ToF32(b), h[0]) || Number.isNaN(h[0]!), `fp16 ${b}`);
  }
});

Deno.test("fmaf() rounds once, unlike a product rounded first", () => {
  // From PowerInfer's own Q4_0 output: x·(1/d) is -4.5 after rounding but just below it exactly.
  const x = -2.091796875;
  const id = Math.fround(1 / Math.fround(-3.71875 / -8));
  equal(Math.trunc(Math.fround(Math.fround(x * id) + 8.5)), 4);
  equal(Math.trunc(fmaf(x, id, 8.5)), 3);
  // A double-rounding trap: the exact sum sits just below a float32 midpoint, the double sum on
  // it (ties-to-even would then pick the wrong neighbour).
  equal(fmaf(2 ** -24 * (1 + 2 ** -23), 1 - 2 ** -23, 1 + 2 ** -23), 1 + 2 ** -23);
  equal(fmaf(2 ** -24, 1, 1), 1); // an exact tie goes to even
});

Deno.test("nearestInt() rounds halves to even like ggml's nearest_int", () => {
  deepStrictEqual([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999998].map(nearestInt), [0, 2, 2, 0, -2, 2]);
});

Deno.test("quantizeQ4_0() pins the block layout on a hand-made block", () => {
  const x = new Float32Array(32);
  x[0] = -8; // the extreme: d = -8 / -8 = 1, q = 0
  x[16] = 7; // q = 15 in the high nibble of qs[0]
  x[1] = 8; // -m maps to 16 and is clamped to 15
  x[17] = 0.49; // 8.99 -> 8
  const b = quantizeQ4_0(x);
  deepStrictEqual([...b.subarray(0, 4)], [0x00, 0x3c, 0xf0, 0x8f]);
  equal(b[10], 0x88); // untouched zeros are q = 8 in both nibbles
  deepStrictEqual([...dequantizeQ4_0(b).subarray(0, 2)], [-8, 7]);
});

Deno.test("quantizeQ4_0() of an all-zero block stores d = -0 and q = 8", () => {
  const b = quantizeQ4_0(new Float32Array(32));
  deepStrictEqual([...b.subarray(0, 3)], [0x00, 0x80, 0x88]);
});

Deno.test("quantizeQ5_0() puts the 5th bits in qh", () => {
  const x = new Float32Array(32);
  x[0] = -16; // d = 1, v = 0: the only element without its 5th bit (zeros are v = 16)
  x[31] = 15; // v = 31: low nibble 15 in the high half of qs[15]
  x[2] = 1; // v = 17
  const b = quantizeQ5_0(x);
  deepStrictEqual([...b.subarray(0, 6)], [0x00, 0x3c, 0xfe, 0xff, 0xff, 0xff]);
  deepStrictEqual([b[6], b[6 + 2], b[6 + 15]], [0x00, 0x01, 0xf0]);
  const y = dequantizeQ5_0(b);
  deepStrictEqual([y[0], y[2], y[31]], [-16, 1, 15]);
});

Deno.test("quantizeQ8_0() rounds halves away from zero; the activation variant to even", () => {
  const x = new Float32Array(32);
  x[0] = 127;
  x[1] = 2.5;
  x[2] = -0.5;
  const ref = new Int8Array(quantizeQ8_0(x).buffer, 2, 32);
  const act = new Int8Array(quantizeQ8_0Activation(x).buffer, 2, 32);
  deepStrictEqual([ref[0], ref[1], ref[2]], [127, 3, -1]);
  deepStrictEqual([act[0], act[1], act[2]], [127, 2, 0]);
});

Deno.test("quantizeQ6_K() of zeros is an all-zero super-block", () => {
  deepStrictEqual(quantizeQ6_K(new Float32Array(256)), new Uint8Array(210));
});

Deno.test("quantizeQ6_K() round-trips within half a step, and within amax/32 anywhere", () => {
  const rnd = seededRandom(11);
  for (let trial = 0; trial < 40; trial++) {
    const scale = 10 ** (rnd() * 6 - 3);
    const x = Float32Array.from(
      { length: 256 },
      () => (rnd() - 0.5) * scale * (rnd() < 0.05 ? 8 : 1),
    );
    const bytes = quantizeQ6_K(x);
    const y = dequantizeQ6_K(bytes);
    const d = fp16ToF32(bytes[208]! | (bytes[209]! << 8));
    let amax = 0;
    for (const v of x) amax = Math.max(amax, Math.abs(v));
    for (let i = 0; i < 256; i++) {
      const dj = Math.abs(Math.fround(d * ((bytes[192 + (i >> 4)]! << 24) >> 24)));
      const err = Math.abs(x[i]! - y[i]!);
      ok(err <= amax / 32, `trial ${trial} element ${i}: error ${err} > amax/32 (${amax / 32})`);
      // Codes that were not clamped are within half a step (plus float32 rounding of y).
      if (dj > 0 && Math.abs(x[i]! / dj) < 31.5) {
        ok(
          err <= dj * (0.5 + 2 ** -20),
          `trial ${trial} element ${i}: error ${err} > step ${dj}/2`,
        );
      }
    }
  }
});

Deno.test("quantizeQ8_K() sums each group of 16 codes into bsums", () => {
  const x = testValues(512, 5);
  const b = quantizeQ8_K(x);
  const v = new DataView(b.buffer);
  for (let blk = 0; blk < 2; blk++) {
    for (let g = 0; g < 16; g++) {
      let s = 0;
      for (let j = 0; j < 16; j++) s += v.getInt8(blk * 292 + 4 + 16 * g + j);
      equal(v.getInt16(blk * 292 + 260 + 2 * g, true), s);
    }
  }
});

Deno.test("quantize() rejects lengths that are not whole blocks", () => {
  throws(() => quantize(GgmlType.Q4_0, new Float32Array(33)), RangeError);
  throws(() => quantize(GgmlType.Q6_K, new Float32Array(128)), RangeError);
  throws(() => dequantize(GgmlType.Q8_0, new Uint8Array(35)), RangeError);
});

// ---- native kernels (kernels/cpu/quant.c) against the references ----

// Row lengths per block size and row counts chosen to cross the kernel's 4096-element chunks and
// its 16384-element thread grain at odd places.
const SHAPES: Record<number, [number, number][]> = {
  1: [[1, 1], [7, 3], [33, 160], [5, 4097]],
  32: [[1, 32], [3, 96], [33, 160], [41, 2080]],
  256: [[1, 256], [3, 768], [9, 2304]],
};

for (const type of NATIVE_TYPES) {
  const block = type === GgmlType.Q6_K ? 256 : type <= 1 ? 1 : 32;
  for (const fused of type === GgmlType.Q4_0 || type === GgmlType.Q5_0 ? [true, false] : [true]) {
    const tag = `${ggmlTypeName(type)}${fused ? "" : " (unfused)"}`;
    Deno.test(`quantizeRows() ${tag} matches the TS reference bit for bit, native and ref`, () => {
      let seed = 100 + type;
      for (const [nRows, nCols] of SHAPES[block]!) {
        const x = testValues(nRows * nCols, seed++);
        const want = quantize(type, x, { fused });
        for (const ref of [false, true]) {
          for (const src of ["f32", "f16"] as const) {
            // From f16 sources the reference sees the widened values.
            const input = src === "f32"
              ? x
              : new Uint16Array(x.length).map((_, i) => fp16FromF32(x[i]!));
            const expect = src === "f32"
              ? want
              : quantize(type, dequantize(GgmlType.F16, new Uint8Array(input.buffer)), { fused });
            const got = new Uint8Array(expect.length);
            quantizeRows(
              got,
              type,
              input,
              src === "f32" ? GgmlType.F32 : GgmlType.F16,
              nRows,
              nCols,
              {
                fused,
                ref,
              },
            );
            assertSameBytes(
              got,
              expect,
              `${tag} [${nRows}, ${nCols}] from ${src}${ref ? " (ref)" : ""}`,
              BLOCK_BYTES[type],
            );
          }
        }
      }
    });
  }
  Deno.test(`dequantizeRows() ${ggmlTypeName(type)} matches the TS reference bit for bit`, () => {
    const [nRows, nCols] = SHAPES[block]![2]!;
    const bytes = quantize(type, testValues(nRows * nCols, 7));
    const want = dequantize(type, bytes);
    const got = new Float32Array(want.length);
    dequantizeRows(got, bytes, type, nRows, nCols);
    for (let i = 0; i < want.length; i++) {
      if (!Object.is(got[i], want[i])) throw new Error(`element ${i}: ${got[i]} != ${want[i]}`);
    }
  });
}

Deno.test("quantizeRows() output does not depend on the thread count", () => {
  const x = testValues(64 * 4096, 3);
  const outs = [1, 2, 3].map((n) => {
    setThreads(n);
    const out = new Uint8Array(64 * 4096 / 32 * 18);
    quantizeRows(out, GgmlType.Q4_0, x, GgmlType.F32, 64, 4096);
    return out;
  });
  setThreads(0);
  assertSameBytes(outs[1]!, outs[0]!, "2 threads vs 1", 18);
  assertSameBytes(outs[2]!, outs[0]!, "3 threads vs 1", 18);
});

Deno.test("quantizeRowsAsync() serial (off the pool, beside a pool call) gives the same bytes", async () => {
  const x = testValues(16 * 2048, 5);
  const f16 = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) f16[i] = fp16FromF32(x[i]!);
  for (const type of [GgmlType.Q6_K, GgmlType.Q4_0]) {
    const size = quantize(type, new Float32Array(2048)).length * 16;
    const pooled = new Uint8Array(size),
      serial = new Uint8Array(size),
      beside = new Uint8Array(size);
    quantizeRows(pooled, type, f16, GgmlType.F16, 16, 2048);
    await Promise.all([
      quantizeRowsAsync(serial, type, f16, GgmlType.F16, 16, 2048, { serial: true }),
      quantizeRowsAsync(beside, type, f16, GgmlType.F16, 16, 2048),
    ]);
    assertSameBytes(serial, pooled, `${ggmlTypeName(type)} serial`);
    assertSameBytes(beside, pooled, `${ggmlTypeName(type)} pool beside serial`);
  }
});

Deno.test("quantizeRows() refuses bad shapes and types", () => {
  const x = new Float32Array(48);
  throws(() => quantizeRows(new Uint8Array(27), GgmlType.Q4_0, x, GgmlType.F32, 1, 48), RangeError);
  throws(() => quantizeRows(new Uint8Array(18), GgmlType.Q4_1, x, GgmlType.F32, 1, 32), RangeError);
  throws(
    () => quantizeRows(new Uint8Array(18), GgmlType.Q4_0, new Uint8Array(32), GgmlType.I8, 1, 32),
    RangeError,
  );
});

// Cross-checks of H-speed's activation quantizers (quant_dot.c) against these references.
Deno.test("quantizeQ8_0Activation() matches pi_quantize_q8_0_act", () => {
  const x = testValues(32 * 67, 21);
  assertSameBytes(quantizeQ8_0Act(x), quantizeQ8_0Activation(x), "Q8_0 activations", 34);
});

Deno.test("quantizeQ8_K() matches pi_quantize_q8_k_act", () => {
  const x = testValues(256 * 9, 22);
  assertSameBytes(quantizeQ8_KAct(x), quantizeQ8_K(x), "Q8_K activations", 292);
});

Deno.test("quantizeRows() Q6_K matches the TS reference on extreme and non-finite values", () => {
  // The AVX2 scale search clamps in floats (exact for finite input); blocks holding Inf or NaN
  // take the scalar search. Each 256-value block mixes one kind of extreme into random values.
  const rnd = seededRandom(61);
  const specials = [Infinity, -Infinity, NaN, 3e38, -3e38, 1e-30, 1.2e-30, 1e-40, 0];
  const x = new Float32Array(256 * specials.length * 2);
  for (let i = 0; i < x.length; i++) {
    const block = Math.floor(i / 256);
    const s = specials[block % specials.length]!;
    const scale = block < specials.length ? 1 : 1e-31; // second half: values near the 1e-30 cut
    x[i] = rnd() < 0.1 ? s : (rnd() - 0.5) * scale;
  }
  const want = quantize(GgmlType.Q6_K, x);
  for (const ref of [false, true]) {
    const got = new Uint8Array(want.length);
    quantizeRows(got, GgmlType.Q6_K, x, GgmlType.F32, x.length / 256, 256, { ref });
    assertSameBytes(got, want, `Q6_K extremes${ref ? " (ref)" : ""}`, 210);
  }
});

Deno.test("quantizeRows() Q6_K matches the TS reference on sub-blocks of mixed scales and kinds", () => {
  // Every 16-value sub-block draws its own kind and scale, so one super-block mixes zero, tiny
  // (scales rounding to 0: the search's codes are kept), single-signed, tied, half-step and huge
  // sub-blocks; a few blocks hold Inf/NaN (the scalar search). Row counts cross the 4096-element
  // chunks at odd places.
  const rnd = seededRandom(67);
  const shapes: [number, number][] = [[1, 256], [7, 512], [13, 768], [3, 4352]];
  for (const [nRows, nCols] of shapes) {
    const x = new Float32Array(nRows * nCols);
    for (let s = 0; s < x.length / 16; s++) {
      const kind = Math.floor(rnd() * 10);
      const scale = 10 ** (rnd() * 60 - 30);
      const m = (rnd() < 0.5 ? -1 : 1) * scale;
      for (let i = 16 * s; i < 16 * s + 16; i++) {
        const r = rnd() - 0.5;
        switch (kind) {
          case 0:
            x[i] = 0;
            break;
          case 1:
            x[i] = -Math.abs(r) * scale;
            break;
          case 2:
            x[i] = Math.round(r * 8) / 4 * scale;
            break;
          case 3:
            x[i] = r * scale * 1e-4;
            break;
          case 4:
            x[i] = (i % 16 === 3 ? 1 : (Math.floor(r * 66) + 0.5) / 32) * m;
            break;
          case 5:
            x[i] = (i % 16 === 0 ? 1 : Math.floor(r * 66) / 32) * m;
            break;
          case 6:
            x[i] = r * 2e-30;
            break;
          case 7:
            x[i] = r * 3e38;
            break;
          case 8:
            x[i] = rnd() < 0.02 ? [Infinity, -Infinity, NaN][i % 3]! : r * scale;
            break;
          default:
            x[i] = r * scale;
        }
      }
    }
    const want = quantize(GgmlType.Q6_K, x);
    for (const ref of [false, true]) {
      const got = new Uint8Array(want.length);
      quantizeRows(got, GgmlType.Q6_K, x, GgmlType.F32, nRows, nCols, { ref });
      assertSameBytes(got, want, `Q6_K mixed [${nRows}, ${nCols}]${ref ? " (ref)" : ""}`, 210);
    }
  }
});
