/**
 * The kernels' fast entry points on fixed seeded inputs, as one sha256 per case (output bytes):
 * tests/portable_kernels_test.ts runs this in-process (AVX2) and in a child process with
 * `PI_FORCE_SCALAR=1` (the portable twins) and requires the same digests. Run as a script it
 * prints `{ avx2, digests }` as JSON.
 *
 * Every case runs at 1 and 2 threads; the shapes reach the kernels' special paths: F32/F16 tails
 * (n % 32), two-token F16/F32 passes, Q4_0 rows 4 and 1 per pass (short rows too), 4-token
 * prompt tiles, Q6_K blocks, f16 attention rows under and over 64 with f64 tails, sparse
 * gathers, axpy chunks of 64 entries on two threads, and the fused sparse FFN of each kind.
 *
 * @module
 */
import { createHash } from "node:crypto";
import {
  attention,
  getThreads,
  hasAvx2,
  kvStore,
  layerNorm,
  matmul,
  quantizeQ8_0Act,
  quantizeQ8_KAct,
  quantizeRows,
  rmsNorm,
  rowByteLength,
  setThreads,
  sparseAxpy,
  sparseFfn,
  sparseMatmul,
  vecDotQuant,
} from "../ffi/ops.ts";
import { GgmlType } from "../src/gguf/types.ts";
import { seededRandom } from "./_helpers.ts";

function randomF32(seed: number, n: number, scale = 1): Float32Array {
  const rnd = seededRandom(seed);
  return Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * scale);
}

function weights(seed: number, type: GgmlType, nRows: number, nCols: number): Uint8Array {
  const src = randomF32(seed, nRows * nCols, 0.5);
  if (type === GgmlType.F32) return new Uint8Array(src.buffer);
  const dst = new Uint8Array(nRows * rowByteLength(type, nCols));
  quantizeRows(dst, type, src, GgmlType.F32, nRows, nCols);
  return dst;
}

function digest(...parts: ArrayBufferView[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
  return h.digest("hex");
}

/** Case name -> sha256 of its outputs. */
export function kernelDigests(): Record<string, string> {
  const out: Record<string, string> = {};
  const before = getThreads();
  try {
    for (const threads of [1, 2]) {
      setThreads(threads);
      for (const [name, run] of CASES) out[`${name}, ${threads} threads`] = run();
    }
  } finally {
    setThreads(before);
  }
  return out;
}

const CASES: [string, () => string][] = [];
let seed = 1;

// dense matmul
for (const type of [GgmlType.F32, GgmlType.F16, GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q6_K]) {
  const block = type === GgmlType.Q6_K
    ? 256
    : type === GgmlType.F32 || type === GgmlType.F16
    ? 1
    : 32;
  const shapes = block === 1
    ? [[37, 100, 1], [19, 2048 + 40, 3]]
    : block === 32
    ? [[37, 96, 1], [45, 2048 + 96, 1], [19, 352, 6]]
    : [[21, 512, 1], [9, 256, 3]];
  for (const [nRows, nCols, nTokens] of shapes as [number, number, number][]) {
    const s = seed++;
    CASES.push([`matmul ${GgmlType[type]} ${nRows}x${nCols} x ${nTokens}`, () => {
      const w = weights(s, type, nRows, nCols);
      const x = randomF32(s + 1000, nTokens * nCols, 2);
      const o = new Float32Array(nTokens * nRows);
      matmul(o, w, type, nRows, nCols, x, nTokens);
      return digest(o);
    }]);
  }
}

// the exported single-row dots (plain Q8_0 / Q8_K activations)
for (const type of [GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q6_K]) {
  const s = seed++;
  CASES.push([`vecDotQuant ${GgmlType[type]}`, () => {
    const n = 1024;
    const w = weights(s, type, 1, n);
    const x = randomF32(s + 1000, n, 3);
    const y = type === GgmlType.Q6_K ? quantizeQ8_KAct(x) : quantizeQ8_0Act(x);
    return digest(Float32Array.of(vecDotQuant(type, n, w, y)));
  }]);
}

// norms
for (const n of [100, 2048 + 3]) {
  const s = seed++;
  CASES.push([`rmsNorm/layerNorm n ${n}`, () => {
    const x = randomF32(s, 3 * n, 4), w = randomF32(s + 1, n), b = randomF32(s + 2, n);
    const r = new Float32Array(3 * n), l = new Float32Array(3 * n);
    rmsNorm(r, x, w, 1e-5);
    layerNorm(l, x, w, b, 1e-5);
    return digest(r, l);
  }]);
}

// attention: f16 and f32 caches; head dims under 64, 64 and 128; V rows of 70 cells (f32 lanes
// for 64, an f64 tail for 6); GQA 8 heads over 2. With an f16 cache, AVX2 takes the query heads
// of one KV head together (four per pass): groups of 12 (passes of 4, 4 and 4 on one thread;
// split 6 + 6 on two) and of 3 over 3 tokens, with an empty cell (-1) that every head masks.
// The long case gives enough scores (32 heads x 600 cells) that a K dot summed in another order
// changes some fp16-rounded softmax input, and so the output.
function attentionCase(
  f16: boolean,
  headDim: number,
  nHead: number,
  nHeadKv: number,
  nTokens: number,
  emptyCell: number,
  nKv = 70,
): () => string {
  const s = seed++;
  return () => {
    const nCtx = nKv + 10;
    const nEmbdGqa = nHeadKv * headDim;
    const src = randomF32(s, 2 * nCtx * nEmbdGqa, 2);
    const k = src.subarray(0, nCtx * nEmbdGqa), v = src.subarray(nCtx * nEmbdGqa);
    const kCache = f16 ? new Uint16Array(nCtx * nEmbdGqa) : new Float32Array(nCtx * nEmbdGqa);
    const vCache = f16 ? new Uint16Array(nCtx * nEmbdGqa) : new Float32Array(nCtx * nEmbdGqa);
    kvStore(
      kCache,
      vCache,
      nCtx,
      nEmbdGqa,
      k,
      v,
      nCtx,
      Int32Array.from({ length: nCtx }, (_, i) => i),
    );
    const q = randomF32(s + 1, nTokens * nHead * headDim, 2);
    const o = new Float32Array(nTokens * nHead * headDim);
    const cellPos = Int32Array.from({ length: nKv }, (_, i) => (i === emptyCell ? -1 : i));
    attention(
      o,
      q,
      kCache,
      vCache,
      nCtx,
      nKv,
      nTokens,
      nHead,
      nHeadKv,
      headDim,
      Int32Array.from({ length: nTokens }, (_, t) => nKv - nTokens - 3 + t),
      cellPos,
      1 / Math.sqrt(headDim),
    );
    return digest(o);
  };
}
for (const f16 of [true, false]) {
  for (const headDim of [40, 64, 128]) {
    CASES.push([
      `attention ${f16 ? "f16" : "f32"} head dim ${headDim}`,
      attentionCase(f16, headDim, 8, 2, 2, -1),
    ]);
  }
}
CASES.push(["attention f16, 12 heads over 1", attentionCase(true, 64, 12, 1, 1, 9)]);
CASES.push(["attention f16, 6 heads over 2, 3 tokens", attentionCase(true, 40, 6, 2, 3, 30)]);
CASES.push([
  "attention f16, 32 heads over 1, 600 cells",
  attentionCase(true, 64, 32, 1, 1, 5, 600),
]);

// sparse ops: every type, 1 token (the active list; axpy chunks of 64 entries over 2 threads)
// and 3 tokens
const SPARSE_TYPES = [GgmlType.F32, GgmlType.F16, GgmlType.Q4_0, GgmlType.Q8_0];
for (const type of SPARSE_TYPES) {
  for (const nTokens of [1, 3]) {
    const s = seed++;
    CASES.push([`sparseMatmul/sparseAxpy ${GgmlType[type]} x ${nTokens}`, () => {
      const nFf = 512, nEmbd = 96 + (type === GgmlType.F32 || type === GgmlType.F16 ? 4 : 0);
      const w = weights(s, type, nFf, nEmbd);
      const x = randomF32(s + 1, nTokens * nEmbd, 2);
      const pred = randomF32(s + 2, nTokens * nFf);
      const gpuIdx = Uint8Array.from({ length: nFf }, (_, j) => (j % 11 === 0 ? 1 : 0));
      const mm = new Float32Array(nTokens * nFf);
      sparseMatmul(mm, w, type, nFf, nEmbd, x, nTokens, pred, 0.2, gpuIdx);
      const a = randomF32(s + 3, nTokens * nFf, 3);
      const ax = new Float32Array(nTokens * nEmbd);
      sparseAxpy(ax, w, type, nFf, nEmbd, a, nTokens, pred, -0.5, gpuIdx);
      return digest(mm, ax);
    }]);
  }
}

const SPARSE_FFN_RUNS = [
  ["relu_mul", 1],
  ["relu_relu_mul", 1],
  ["relu", 1],
  ["relu_mul", 13],
  ["relu", 13],
] as const;

// the fused sparse FFN of each kind (llama, bamboo, falcon), one token (the active list) and a
// batch of 13 (per neuron, its active tokens four at a time)
for (const type of SPARSE_TYPES) {
  for (const [kind, nTokens] of SPARSE_FFN_RUNS) {
    const s = seed++;
    CASES.push([`sparseFfn ${GgmlType[type]} ${kind} x ${nTokens}`, () => {
      const nEmbd = 128, nFf = 512, nHidden = 64;
      const t = (seedOffset: number, nRows: number, nCols: number) => ({
        data: weights(s + seedOffset, type, nRows, nCols),
        type,
        nRows,
        nCols,
      });
      const w = {
        fc1: t(1, nHidden, nEmbd),
        fc2: t(2, nFf, nHidden),
        up: t(3, nFf, nEmbd),
        gate: kind === "relu" ? null : t(4, nFf, nEmbd),
        downT: t(5, nFf, nEmbd),
      };
      const f = randomF32(s + 6, nTokens * nEmbd, 2);
      const z = randomF32(s + 7, nTokens * nEmbd, 2);
      const out = new Float32Array(nTokens * nEmbd), pred = new Float32Array(nTokens * nFf);
      sparseFfn(out, f, z, nTokens, w, kind, 0, null, pred);
      return digest(out, pred);
    }]);
  }
}

if (import.meta.main) console.log(JSON.stringify({ avx2: hasAvx2(), digests: kernelDigests() }));
