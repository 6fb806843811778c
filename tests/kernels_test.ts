// Every foundation kernel against its scalar `_ref` twin (and the refs against TS oracles of the
// spec) on seeded random input at awkward lengths.
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { KernelError } from "../src/errors.ts";
import { GgmlType } from "../src/gguf/types.ts";
import {
  bandwidthGather,
  bandwidthRead,
  bf16ToF32,
  f16ToF32,
  f16ToF32Ref,
  f32ToF16,
  f32ToF16Ref,
  getThreads,
  layerNorm,
  layerNormRef,
  matmul,
  matmulRef,
  physicalCores,
  rmsNorm,
  rmsNormRef,
  setThreads,
} from "../ffi/ops.ts";
import { CudaBuffer, cudaDeviceCount, cudaMatmulF16, cudaRmsNorm, hasCuda } from "../ffi/cuda.ts";
import { assertClose, seededRandom } from "./_helpers.ts";

const LENGTHS = [1, 7, 8, 31, 32, 33, 4095];
/** Norms: the SIMD path adds the f64 sum in 4 lanes; relative error on the output. */
const NORM_TOLERANCE = 1e-6;
/** Matmul: lane-order f32 sums vs f64 sums; scaled by sum |w_i x_i| of each output. */
const MATMUL_TOLERANCE = 2e-6;

function randomF32(n: number, seed: number, scale = 1): Float32Array {
  const rnd = seededRandom(seed);
  return Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * scale);
}

function bits(f: Float32Array): Uint32Array {
  return new Uint32Array(f.buffer, f.byteOffset, f.length);
}

/** Values that exercise fp16 rounding: normals, subnormals, ties, overflow, specials. */
function f16Torture(n: number, seed: number): Float32Array {
  const rnd = seededRandom(seed);
  const special = [0, -0, Infinity, -Infinity, 65504, 65519.99, 65520, -65520, 6.1e-5, 5.96e-8];
  return Float32Array.from({ length: n }, (_, i) => {
    if (i % 11 === 5) return special[(i / 11 | 0) % special.length]!;
    const e = Math.floor(rnd() * 44) - 28; // 2^-28 .. 2^16
    return (rnd() * 2 - 1) * 2 ** e;
  });
}

function f16Oracle(x: Float32Array): Uint16Array {
  return new Uint16Array(Float16Array.from(x).buffer); // V8's RNE conversion
}

for (const n of LENGTHS) {
  Deno.test(`pi_f32_to_f16 equals pi_f32_to_f16_ref and Float16Array at length ${n}`, () => {
    const x = f16Torture(n, 100 + n);
    const a = new Uint16Array(n), b = new Uint16Array(n);
    f32ToF16(x, a);
    f32ToF16Ref(x, b);
    deepStrictEqual(a, b);
    deepStrictEqual(b, f16Oracle(x));
  });
}

Deno.test("pi_f32_to_f16 keeps NaN a NaN in both paths", () => {
  const x = new Float32Array(9).fill(NaN);
  const a = new Uint16Array(9), b = new Uint16Array(9);
  f32ToF16(x, a);
  f32ToF16Ref(x, b);
  deepStrictEqual(a, b);
  ok(a.every((h) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0));
});

Deno.test("pi_f16_to_f32 equals pi_f16_to_f32_ref and Float16Array on all 65536 values", () => {
  const h = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const a = new Float32Array(h.length), b = new Float32Array(h.length);
  f16ToF32(h, a);
  f16ToF32Ref(h, b);
  deepStrictEqual(bits(a), bits(b));
  const oracle = Float32Array.from(new Float16Array(h.buffer));
  for (let i = 0; i < h.length; i++) {
    if (Number.isNaN(oracle[i])) ok(Number.isNaN(b[i]), `NaN at ${i}`);
    else strictEqual(bits(b)[i], bits(oracle)[i]!, `fp16 ${i}`);
  }
});

Deno.test("pi_bf16_to_f32 widens every bf16 value exactly", () => {
  const h = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const out = new Float32Array(h.length);
  bf16ToF32(h, out);
  deepStrictEqual(bits(out), Uint32Array.from(h, (v) => (v << 16) >>> 0));
});

/** model.md §2 in TS: product in f32, sum in f64, every other step in f32. */
function rmsNormOracle(x: Float32Array, w: Float32Array, eps: number): Float32Array {
  const n = w.length, f = Math.fround, out = new Float32Array(x.length);
  for (let r = 0; r < x.length / n; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += f(x[r * n + i]! * x[r * n + i]!);
    const c = f(1 / f(Math.sqrt(f(f(s / n) + eps))));
    for (let i = 0; i < n; i++) out[r * n + i] = f(f(x[r * n + i]! * c) * w[i]!);
  }
  return out;
}

function layerNormOracle(
  x: Float32Array,
  w: Float32Array,
  b: Float32Array | null,
  eps: number,
): Float32Array {
  const n = w.length, f = Math.fround, out = new Float32Array(x.length);
  for (let r = 0; r < x.length / n; r++) {
    const row = x.subarray(r * n, (r + 1) * n);
    const mu = f(row.reduce((a, v) => a + v, 0) / n);
    let s = 0;
    for (const v of row) s += f(f(v - mu) * f(v - mu));
    const c = f(1 / f(Math.sqrt(f(f(s / n) + eps))));
    for (let i = 0; i < n; i++) {
      const y = f(f(f(row[i]! - mu) * c) * w[i]!);
      out[r * n + i] = b ? f(y + b[i]!) : y;
    }
  }
  return out;
}

function maxAbs(a: Float32Array): number {
  return a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
}

for (const n of LENGTHS) {
  Deno.test(`pi_rmsnorm_f32 matches pi_rmsnorm_f32_ref and the spec at length ${n}`, () => {
    const nRows = 3;
    const x = randomF32(nRows * n, 200 + n, 4), w = randomF32(n, 300 + n);
    const a = new Float32Array(x.length), b = new Float32Array(x.length);
    rmsNorm(a, x, w, 1e-5);
    rmsNormRef(b, x, w, 1e-5);
    assertClose(a, b, NORM_TOLERANCE * maxAbs(b), "rmsnorm simd vs ref");
    deepStrictEqual(bits(b), bits(rmsNormOracle(x, w, 1e-5)));
  });

  Deno.test(`pi_layernorm_f32 matches pi_layernorm_f32_ref and the spec at length ${n}`, () => {
    const nRows = 2;
    const x = randomF32(nRows * n, 400 + n, 3).map((v) => v + 0.5);
    const w = randomF32(n, 500 + n), bias = randomF32(n, 600 + n);
    for (const b of [bias, null]) {
      const out = new Float32Array(x.length), ref = new Float32Array(x.length);
      layerNorm(out, x, w, b, 1e-5);
      layerNormRef(ref, x, w, b, 1e-5);
      assertClose(out, ref, NORM_TOLERANCE * (maxAbs(ref) + 1), "layernorm simd vs ref");
      deepStrictEqual(bits(ref), bits(layerNormOracle(x, w, b, 1e-5)));
    }
  });
}

Deno.test("rmsNorm rejects lengths that do not fit", () => {
  throws(
    () => rmsNorm(new Float32Array(5), new Float32Array(5), new Float32Array(2), 1e-5),
    RangeError,
  );
});

/** ggml's scalar dot: products in f32, summed in f64, rounded once. Also returns sum |w x|. */
function dotOracle(w: Float32Array, x: Float32Array): [number, number] {
  let s = 0, mag = 0;
  for (let i = 0; i < w.length; i++) {
    const p = Math.fround(w[i]! * x[i]!);
    s += p;
    mag += Math.abs(p);
  }
  return [Math.fround(s), mag];
}

function matmulCase(
  type: GgmlType.F32 | GgmlType.F16,
  nRows: number,
  nCols: number,
  nTokens: number,
) {
  const seed = 1000 * nCols + 10 * nRows + nTokens + type;
  const wf = randomF32(nRows * nCols, seed);
  const x = randomF32(nTokens * nCols, seed + 1, 2);
  let w: Uint8Array;
  let wAsF32 = wf; // the weights as the dot sees them
  let xAsF32 = x;
  if (type === GgmlType.F16) {
    const wh = new Uint16Array(wf.length);
    f32ToF16Ref(wf, wh);
    w = new Uint8Array(wh.buffer);
    wAsF32 = Float32Array.from(new Float16Array(wh.buffer));
    xAsF32 = Float32Array.from(Float16Array.from(x));
  } else {
    w = new Uint8Array(wf.buffer);
  }
  return { w, x, wAsF32, xAsF32 };
}

for (const type of [GgmlType.F32, GgmlType.F16] as const) {
  const name = GgmlType[type];
  for (const nCols of LENGTHS) {
    for (const nTokens of [1, 3]) {
      Deno.test(`pi_matmul ${name} matches pi_matmul_ref and ggml's scalar dot, n_cols ${nCols}, ${nTokens} token(s)`, () => {
        const nRows = 37;
        const { w, x, wAsF32, xAsF32 } = matmulCase(type, nRows, nCols, nTokens);
        const out = new Float32Array(nTokens * nRows), ref = new Float32Array(nTokens * nRows);
        matmul(out, w, type, nRows, nCols, x, nTokens);
        matmulRef(ref, w, type, nRows, nCols, x, nTokens);
        for (let t = 0; t < nTokens; t++) {
          for (let r = 0; r < nRows; r++) {
            const [want, mag] = dotOracle(
              wAsF32.subarray(r * nCols, (r + 1) * nCols),
              xAsF32.subarray(t * nCols, (t + 1) * nCols),
            );
            const i = t * nRows + r;
            strictEqual(ref[i], want, `ref [${t}, ${r}]`);
            const d = Math.abs(out[i]! - want);
            ok(
              d <= MATMUL_TOLERANCE * mag,
              `[${t}, ${r}]: pi_matmul ${out[i]} vs ref ${want} (|diff| ${d} > ${
                MATMUL_TOLERANCE * mag
              })`,
            );
          }
        }
      });
    }
  }

  Deno.test(`pi_matmul ${name} gives the same bits for any thread count and batch split`, () => {
    const nRows = 333, nCols = 4095, nTokens = 5;
    const { w, x } = matmulCase(type, nRows, nCols, nTokens);
    const before = getThreads();
    try {
      const results: Float32Array[] = [];
      for (const threads of [1, 2, 3]) {
        setThreads(threads);
        strictEqual(getThreads(), threads);
        const out = new Float32Array(nTokens * nRows);
        matmul(out, w, type, nRows, nCols, x, nTokens);
        results.push(out);
      }
      deepStrictEqual(bits(results[1]!), bits(results[0]!));
      deepStrictEqual(bits(results[2]!), bits(results[0]!));
      // token by token equals the batch
      for (let t = 0; t < nTokens; t++) {
        const one = new Float32Array(nRows);
        matmul(one, w, type, nRows, nCols, x.subarray(t * nCols, (t + 1) * nCols), 1);
        deepStrictEqual(bits(one), bits(results[0]!.subarray(t * nRows, (t + 1) * nRows)));
      }
    } finally {
      setThreads(before);
    }
  });
}

Deno.test("pi_matmul reports an unknown ggml type as a KernelError", () => {
  const out = new Float32Array(1);
  throws(
    () => matmul(out, new Uint8Array(64), 16 as GgmlType, 1, 16, new Float32Array(16), 1),
    (e: unknown) => e instanceof KernelError && e.status === -3 && /type 16/.test(e.message),
  );
});

Deno.test("matmul rejects buffers that do not fit the shape", () => {
  const x = new Float32Array(8);
  throws(
    () => matmul(new Float32Array(2), new Uint8Array(60), GgmlType.F32, 2, 8, x, 1),
    RangeError,
  );
  throws(
    () => matmul(new Float32Array(3), new Uint8Array(64), GgmlType.F32, 2, 8, x, 1),
    RangeError,
  );
  throws(
    () => matmul(new Float32Array(2), new Uint8Array(64), GgmlType.Q4_0, 2, 8, x, 1),
    RangeError,
  );
});

Deno.test("setThreads(0) restores the physical core count", () => {
  setThreads(1);
  strictEqual(getThreads(), 1);
  setThreads(0);
  strictEqual(getThreads(), physicalCores());
  ok(physicalCores() >= 1);
  throws(() => setThreads(-1), RangeError);
});

for (const n of [0, 1, 7, 8, 33, 4095, 1 << 20]) {
  Deno.test(`pi_bandwidth_read sums ${n} bytes like a TS u64 sum`, () => {
    const rnd = seededRandom(n + 7);
    const buf = Uint8Array.from({ length: n }, () => (rnd() * 256) | 0);
    let want = 0n;
    const words = new BigUint64Array(buf.buffer, 0, Math.floor(n / 8));
    for (const w of words) want += w;
    for (let i = words.length * 8; i < n; i++) want += BigInt(buf[i]!);
    strictEqual(bandwidthRead(buf, 3), (want * 3n) & 0xffffffffffffffffn);
  });
}

// rows of a Q4_0 matrix 2048 wide (1152 bytes) and 64 wide (36 bytes: unaligned words and a tail)
for (const rowBytes of [1152, 36]) {
  Deno.test(`pi_bandwidth_gather sums listed ${rowBytes}-byte rows like TS, on 1 and 2 threads`, () => {
    const nRows = 300;
    const rnd = seededRandom(rowBytes);
    const buf = Uint8Array.from({ length: rowBytes * nRows + 5 }, () => (rnd() * 256) | 0);
    // scattered and repeated rows, not in order, one at an odd offset, one ending at the buffer's
    // end; and an empty list
    const rows = Array.from({ length: 97 }, () => Math.floor(rnd() * nRows) * rowBytes);
    rows.push(3, buf.length - rowBytes);
    const offsets = BigInt64Array.from(rows, BigInt);
    const view = new DataView(buf.buffer);
    let want = 0n;
    for (const start of rows) {
      const words = Math.floor(rowBytes / 8);
      for (let w = 0; w < words; w++) want += view.getBigUint64(start + w * 8, true);
      for (let i = start + words * 8; i < start + rowBytes; i++) want += BigInt(buf[i]!);
    }
    for (const threads of [1, 2]) {
      setThreads(threads);
      strictEqual(bandwidthGather(buf, rowBytes, offsets, 2), (want * 2n) & 0xffffffffffffffffn);
      strictEqual(bandwidthGather(buf, rowBytes, new BigInt64Array(0), 2), 0n);
    }
    setThreads(0);
    const end = BigInt(buf.length - rowBytes + 1);
    throws(() => bandwidthGather(buf, rowBytes, BigInt64Array.of(0n, end)), /end outside/);
    throws(() => bandwidthGather(buf, rowBytes, BigInt64Array.of(-1n)), /end outside/);
    throws(() => bandwidthGather(buf, 0, offsets), /row_bytes 0/);
  });
}

// ---- CUDA (kernels/cuda): the same comparisons, only where a GPU and the CUDA build exist ----

Deno.test("cudaDeviceCount() reports a count without throwing, with or without CUDA", () => {
  const n = cudaDeviceCount();
  ok(Number.isInteger(n) && n >= 0);
});

for (const n of LENGTHS) {
  Deno.test({
    name: `pi_cuda_rmsnorm_f32 matches pi_rmsnorm_f32_ref at length ${n}`,
    ignore: !hasCuda(),
    fn() {
      const nRows = 3;
      const x = randomF32(nRows * n, 200 + n, 4), w = randomF32(n, 300 + n);
      const ref = new Float32Array(x.length), got = new Float32Array(x.length);
      rmsNormRef(ref, x, w, 1e-5);
      using dx = CudaBuffer.from(x);
      using dw = CudaBuffer.from(w);
      using dOut = CudaBuffer.alloc(x.byteLength);
      cudaRmsNorm(dOut, dx, dw, nRows, n, 1e-5);
      dOut.download(got);
      assertClose(got, ref, NORM_TOLERANCE * maxAbs(ref), "rmsnorm cuda vs ref");
    },
  });

  Deno.test({
    name: `pi_cuda_matmul_f16 matches pi_matmul_ref, n_cols ${n}`,
    ignore: !hasCuda(),
    fn() {
      const nRows = 37, nTokens = 3;
      const { w, x, wAsF32, xAsF32 } = matmulCase(GgmlType.F16, nRows, n, nTokens);
      const ref = new Float32Array(nTokens * nRows), got = new Float32Array(nTokens * nRows);
      matmulRef(ref, w, GgmlType.F16, nRows, n, x, nTokens);
      using dw = CudaBuffer.from(w);
      using dx = CudaBuffer.from(x);
      using dOut = CudaBuffer.alloc(got.byteLength);
      cudaMatmulF16(dOut, dw, nRows, n, dx, nTokens);
      dOut.download(got);
      for (let t = 0; t < nTokens; t++) {
        for (let r = 0; r < nRows; r++) {
          const [, mag] = dotOracle(
            wAsF32.subarray(r * n, (r + 1) * n),
            xAsF32.subarray(t * n, (t + 1) * n),
          );
          const i = t * nRows + r;
          ok(
            Math.abs(got[i]! - ref[i]!) <= MATMUL_TOLERANCE * mag,
            `[${t}, ${r}]: ${got[i]} vs ${ref[i]}`,
          );
        }
      }
    },
  });
}
