/**
 * Synthetic ReLU-LLaMA models of named shapes with planted, skewed activation sparsity and exact
 * predictors: the bench and scale-test model generator (`deno task make-model`).
 *
 * Construction (the tiny fixture's, shared/fixtures/models/README.md):
 * - every token embedding is `n + β·u` with u a fixed unit direction, n ⟂ u with unit-variance
 *   components and β = 1.5·√n_embd; o_proj and down_proj write only into the space ⟂ u, so
 *   `u·x = β` in every layer's residual;
 * - `W_gate = B·A + o·(u/β)ᵀ`: A has r orthonormal rows ⟂ u (the random part, std σ_i = |B_i|
 *   per neuron); neuron i's offset `o_i = −σ_i·Φ⁻¹(1−p_i)` on the direction u/β (which reads 1
 *   from every residual) makes it fire (gate > 0) on about a fraction p_i of tokens,
 *   p_i ~ Beta(0.5, b) with mean 1 − sparsity (a few neurons often, most rarely);
 * - `fc1 = [A; −A; u/β; −u/β; 0…]`, `fc2 = [B, −B, o, −o, 0…]`: `fc2·ReLU(fc1·z) = W_gate·z`
 *   (norm weights are 1), so the predictor's sign is the gate's sign: recall 1 up to rounding.
 *   The offset sits in its own 32-wide block of fc2 so that Q4_0 keeps it exactly (in a block
 *   with the random coefficients it would round to 0 and bias the predictor).
 * Every tensor has its own seeded generator, so files are reproducible; data is streamed tensor
 * by tensor through `writeGguf`. Q4_0 goes through the quantize tool (`quantizeModel`).
 *
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { f32ToF16, matmul } from "../../ffi/ops.ts";
import { openGguf } from "../gguf/open.ts";
import { GgmlType, type GgufKv, GgufValueType } from "../gguf/types.ts";
import { type GgufWriteTensor, writeGguf } from "../gguf/writer.ts";
import { quantizeModel } from "../quant/quantize_model.ts";

/** Hyperparameters of a generated model. */
export interface ModelShape {
  readonly name: string;
  readonly nEmbd: number;
  readonly nLayer: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly nFf: number;
  readonly nCtx: number;
  /** Random rank of W_gate (predictor hidden = 2·rank + 32; a multiple of 16 so Q4_0 fits). */
  readonly rank: number;
}

/** The named shapes (vocabulary: the real LLaMA one, 32000 tokens). */
export const MODEL_SHAPES: Readonly<Record<string, ModelShape>> = {
  "tiny": {
    name: "tiny",
    nEmbd: 64,
    nLayer: 2,
    nHead: 4,
    nHeadKv: 4,
    nFf: 1024,
    nCtx: 2048,
    rank: 16,
  },
  "small": {
    name: "small",
    nEmbd: 256,
    nLayer: 4,
    nHead: 8,
    nHeadKv: 4,
    nFf: 1536,
    nCtx: 2048,
    rank: 16,
  },
  "tinyllama-1.1b": {
    name: "tinyllama-1.1b",
    nEmbd: 2048,
    nLayer: 22,
    nHead: 32,
    nHeadKv: 4,
    nFf: 5632,
    nCtx: 2048,
    rank: 32,
  },
  "llama2-7b": {
    name: "llama2-7b",
    nEmbd: 4096,
    nLayer: 32,
    nHead: 32,
    nHeadKv: 32,
    nFf: 11008,
    nCtx: 4096,
    rank: 64,
  },
};

/** Options of {@linkcode makeModel}. */
export interface MakeModelOptions {
  /** A name of {@linkcode MODEL_SHAPES} or a custom shape. */
  shape: string | ModelShape;
  /** Output file. */
  out: string;
  /** "f16" (default) or "q4_0" (quantized with the quantize tool). */
  type?: "f16" | "q4_0";
  /** Fraction of FFN neurons inactive per token on average (default 0.87). */
  sparsity?: number;
  /** Seed of every generator (default 1). */
  seed?: number;
  /**
   * Write the plain dense llama.cpp twin instead (magic GGUF, `ffn_down` untransposed, no
   * predictor) of exactly the same weights: the "same model as a dense file" of the bench.
   */
  dense?: boolean;
  /**
   * Directory for the activation statistics (`activation_counts.json`, H-gpuindex's format:
   * expected firing counts from the planted rates over `STATS_TOKENS` tokens). Default
   * `<dir of out>/activation`; null = none. Never written for dense twins.
   */
  statsDir?: string | null;
  /** LLaMA vocab GGUF whose tokenizer metadata is copied (default the shared fixture). */
  vocabPath?: string;
  onProgress?: (message: string) => void;
}

/** What {@linkcode makeModel} wrote. */
export interface MakeModelResult {
  readonly path: string;
  readonly byteLength: number;
  readonly statsPath: string | null;
  /** Planted mean active fraction per layer (1 − sparsity, as sampled). */
  readonly activeFraction: number[];
}

/** Token count the written activation statistics stand for. */
export const STATS_TOKENS = 10000;

const DEFAULT_VOCAB = new URL(
  "../../../shared/fixtures/vocab/ggml-vocab-llama.gguf",
  import.meta.url,
);
const EMB_OFFSET = 1.5; // β = EMB_OFFSET·√n_embd
const RESIDUAL_WRITE_SCALE = 0.05; // |attention / FFN output| ≈ this · √n_embd
const LM_HEAD_SCALE = 3;
const ACTIVE_BETA_A = 0.5;

// ---- seeded random numbers ----

/** xorshift128+-style generator seeded by (seed, tensor name); uniform in [0, 1). */
function rngFor(seed: number, name: string): () => number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x85ebca6b) >>> 0;
  let a = h || 1, b = (h * 2654435761) >>> 0 || 2, c = 0x1234567, d = 0x89abcdef;
  return () => {
    // sfc32
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
}

/** Fills `out` with zero-mean values of standard deviation `std` (uniform: cheap, CLT does the rest). */
function fillUniform(out: Float32Array, rnd: () => number, std: number): Float32Array {
  const k = std * Math.sqrt(3) * 2;
  for (let i = 0; i < out.length; i++) out[i] = (rnd() - 0.5) * k;
  return out;
}

function gaussian(rnd: () => number): number {
  const u1 = rnd() || 1e-12;
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * rnd());
}

/** Gamma(k, 1) (Marsaglia–Tsang; k < 1 through the boost). */
function gamma(rnd: () => number, k: number): number {
  if (k < 1) return gamma(rnd, k + 1) * Math.pow(rnd() || 1e-12, 1 / k);
  const d = k - 1 / 3, c = 1 / Math.sqrt(9 * d);
  for (;;) {
    const x = gaussian(rnd);
    const v = (1 + c * x) ** 3;
    if (v <= 0) continue;
    const u = rnd();
    if (Math.log(u || 1e-12) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/** Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9). */
function normalQuantile(p: number): number {
  const a = [
    -39.69683028665376,
    220.9460984245205,
    -275.9285104469687,
    138.357751867269,
    -30.66479806614716,
    2.506628277459239,
  ];
  const b = [
    -54.47609879822406,
    161.5858368580409,
    -155.6989798598866,
    66.80131188771972,
    -13.28068155288572,
  ];
  const c = [
    -0.007784894002430293,
    -0.3223964580411365,
    -2.400758277161838,
    -2.549732539343734,
    4.374664141464968,
    2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) /
      ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  }
  if (p > 1 - lo) return -normalQuantile(1 - p);
  const q = p - 0.5, r = q * q;
  return (((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q /
    (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
}

// ---- linear algebra helpers ----

function dot(a: Float32Array, ao: number, b: Float32Array, bo: number, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[ao + i]! * b[bo + i]!;
  return s;
}

/** Removes the u component of each of the `nRows` rows of `m` (in place). */
function projectRowsOffU(m: Float32Array, nRows: number, u: Float32Array): void {
  const n = u.length;
  for (let r = 0; r < nRows; r++) {
    const o = r * n;
    const p = dot(m, o, u, 0, n);
    for (let i = 0; i < n; i++) m[o + i] = m[o + i]! - p * u[i]!;
  }
}

/** Removes u from the column space of `m` `[nRows = n_embd, nCols]`: m ← (I − u·uᵀ)·m. */
function projectColsOffU(m: Float32Array, nCols: number, u: Float32Array): void {
  const n = u.length;
  const w = new Float64Array(nCols);
  for (let r = 0; r < n; r++) {
    const ur = u[r]!;
    for (let c = 0; c < nCols; c++) w[c] += ur * m[r * nCols + c]!;
  }
  for (let r = 0; r < n; r++) {
    const ur = u[r]!;
    for (let c = 0; c < nCols; c++) m[r * nCols + c] = m[r * nCols + c]! - ur * w[c]!;
  }
}

// ---- the generator ----

interface LayerPlan {
  /** `[rank, nEmbd]`: orthonormal rows ⟂ u. */
  a: Float32Array;
  /** `[nFf, rank]`. */
  b: Float32Array;
  /** Per-neuron offset on u/β `[nFf]`. */
  o: Float32Array;
  /** Planted firing probability per neuron. */
  p: Float64Array;
}

class Generator {
  readonly u: Float32Array;
  readonly beta: number;
  #layers = new Map<number, LayerPlan>();

  constructor(readonly shape: ModelShape, readonly seed: number, readonly sparsity: number) {
    const rnd = rngFor(seed, "u");
    this.u = fillUniform(new Float32Array(shape.nEmbd), rnd, 1);
    const norm = Math.sqrt(dot(this.u, 0, this.u, 0, shape.nEmbd));
    for (let i = 0; i < shape.nEmbd; i++) this.u[i] = this.u[i]! / norm;
    this.beta = EMB_OFFSET * Math.sqrt(shape.nEmbd);
  }

  layer(l: number): LayerPlan {
    const cached = this.#layers.get(l);
    if (cached) return cached;
    const { nEmbd: d, nFf, rank: r } = this.shape;
    const rnd = rngFor(this.seed, `plan.${l}`);
    // A: Gram-Schmidt of r random directions against u and each other
    const a = new Float32Array(r * d);
    for (let k = 0; k < r; k++) {
      const row = a.subarray(k * d, (k + 1) * d);
      for (let i = 0; i < d; i++) row[i] = gaussian(rnd);
      for (
        const prev of [
          this.u,
          ...Array.from({ length: k }, (_, j) => a.subarray(j * d, (j + 1) * d)),
        ]
      ) {
        const p = dot(row, 0, prev, 0, d);
        for (let i = 0; i < d; i++) row[i] = row[i]! - p * prev[i]!;
      }
      const norm = Math.sqrt(dot(row, 0, row, 0, d));
      for (let i = 0; i < d; i++) row[i] = row[i]! / norm;
    }
    // B: random part, then the calibrated offset
    const m = 1 - this.sparsity;
    const betaB = ACTIVE_BETA_A * (1 - m) / m;
    const b = new Float32Array(nFf * r);
    const o = new Float32Array(nFf);
    const p = new Float64Array(nFf);
    for (let i = 0; i < nFf; i++) {
      let s2 = 0;
      for (let k = 0; k < r; k++) {
        const v = gaussian(rnd) / Math.sqrt(r);
        b[i * r + k] = v;
        s2 += v * v;
      }
      const x = gamma(rnd, ACTIVE_BETA_A), y = gamma(rnd, betaB);
      const pi = Math.min(0.999, Math.max(1e-4, x / (x + y)));
      p[i] = pi;
      // n ~ N(0, I⊥) gives A_k·n ~ N(0, 1): the random part has std sqrt(s2)
      o[i] = -Math.sqrt(s2) * normalQuantile(1 - pi);
    }
    const plan = { a, b, o, p };
    this.#layers.set(l, plan);
    return plan;
  }

  /** Rows of a random matrix with std `std` per element. */
  random(name: string, nRows: number, nCols: number, std: number): Float32Array {
    return fillUniform(new Float32Array(nRows * nCols), rngFor(this.seed, name), std);
  }

  tokenEmbd(): Float32Array {
    const { nEmbd: d } = this.shape;
    const m = this.random("token_embd", VOCAB_SIZE, d, 1);
    projectRowsOffU(m, VOCAB_SIZE, this.u);
    for (let t = 0; t < VOCAB_SIZE; t++) {
      for (let i = 0; i < d; i++) m[t * d + i] = m[t * d + i]! + this.beta * this.u[i]!;
    }
    return m;
  }

  attnOutput(l: number): Float32Array {
    const d = this.shape.nEmbd;
    const m = this.random(`blk.${l}.attn_output`, d, d, RESIDUAL_WRITE_SCALE / Math.sqrt(d) * 2);
    projectColsOffU(m, d, this.u);
    return m;
  }

  /** Transposed down projection `[nFf, nEmbd]`: rows ⟂ u, scaled so |FFN out| ≈ s·√d. */
  downT(l: number): Float32Array {
    const { nEmbd: d, nFf } = this.shape;
    const nActive = Math.max(1, nFf * (1 - this.sparsity));
    const rowNorm = RESIDUAL_WRITE_SCALE * Math.sqrt(d) / (Math.sqrt(nActive) * 0.5);
    const m = this.random(`blk.${l}.ffn_down_t`, nFf, d, rowNorm / Math.sqrt(d));
    projectRowsOffU(m, nFf, this.u);
    return m;
  }

  /** W_gate = B·A + o·(u/β)ᵀ `[nFf, nEmbd]` (B·A by the native F32 matmul). */
  gate(l: number): Float32Array {
    const { nEmbd: d, nFf, rank: r } = this.shape;
    const { a, b, o } = this.layer(l);
    const aT = transpose(a, r, d); // [d, r]
    const out = new Float32Array(nFf * d);
    matmul(out, new Uint8Array(aT.buffer), GgmlType.F32, d, r, b, nFf);
    for (let i = 0; i < nFf; i++) {
      const c = o[i]! / this.beta;
      for (let j = 0; j < d; j++) out[i * d + j] = out[i * d + j]! + c * this.u[j]!;
    }
    return out;
  }

  /** fc1 = [A; −A; u/β; −u/β; 0…] `[2r + 32, nEmbd]`. */
  fc1(l: number): Float32Array {
    const d = this.shape.nEmbd;
    const { a } = this.layer(l);
    const out = new Float32Array(a.length * 2 + 32 * d);
    out.set(a);
    for (let i = 0; i < a.length; i++) out[a.length + i] = -a[i]!;
    for (let j = 0; j < d; j++) {
      out[2 * a.length + j] = this.u[j]! / this.beta;
      out[2 * a.length + d + j] = -this.u[j]! / this.beta;
    }
    return out;
  }

  /** fc2 = [B, −B, o, −o, 0…] `[nFf, 2r + 32]`. */
  fc2(l: number): Float32Array {
    const { nFf, rank: r } = this.shape;
    const { b, o } = this.layer(l);
    const h = 2 * r + 32;
    const out = new Float32Array(nFf * h);
    for (let i = 0; i < nFf; i++) {
      for (let k = 0; k < r; k++) {
        out[i * h + k] = b[i * r + k]!;
        out[i * h + r + k] = -b[i * r + k]!;
      }
      out[i * h + 2 * r] = o[i]!;
      out[i * h + 2 * r + 1] = -o[i]!;
    }
    return out;
  }
}

const VOCAB_SIZE = 32000;

function toF16(x: Float32Array): Uint8Array {
  const h = new Uint16Array(x.length);
  f32ToF16(x, h);
  return new Uint8Array(h.buffer);
}

function transpose(m: Float32Array, nRows: number, nCols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < nRows; r++) {
    for (let c = 0; c < nCols; c++) out[c * nRows + r] = m[r * nCols + c]!;
  }
  return out;
}

function vocabMetadata(path: string | URL): GgufKv[] {
  using vocab = openGguf(path instanceof URL ? fileURLToPath(path) : path);
  return [...vocab.metadata.values()].filter((kv) => kv.key.startsWith("tokenizer."));
}

/**
 * Resolves a shape name of {@linkcode MODEL_SHAPES} (a custom shape passes through).
 *
 * @param shape A shape name or a shape.
 * @returns The shape.
 * @throws {RangeError} On an unknown name, listing the known ones.
 *
 * @example The TinyLlama shape
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { modelShape } from "./make_model.ts";
 * const s = modelShape("tinyllama-1.1b");
 * equal(s.nEmbd, 2048);
 * equal(s.nFf, 5632);
 * ```
 */
export function modelShape(shape: string | ModelShape): ModelShape {
  if (typeof shape !== "string") return shape;
  const s = MODEL_SHAPES[shape];
  if (!s) {
    throw new RangeError(
      `Unknown model shape "${shape}": expected one of ${Object.keys(MODEL_SHAPES).join(", ")}`,
    );
  }
  return s;
}

/**
 * Writes a synthetic PWRI (or dense twin) model of a named shape; see the module doc.
 *
 * @param options What to write.
 * @returns The file written and its planted sparsity.
 * @throws {RangeError} On an unknown shape or a sparsity outside (0, 1).
 *
 * @example Generate the tiny shape
 * ```ts ignore
 * import { makeModel } from "./make_model.ts";
 * const r = await makeModel({ shape: "tiny", out: "/tmp/tiny.gguf", seed: 7 });
 * console.log(r.byteLength);
 * ```
 */
export async function makeModel(options: MakeModelOptions): Promise<MakeModelResult> {
  const shape = modelShape(options.shape);
  const sparsity = options.sparsity ?? 0.87;
  if (!(sparsity > 0 && sparsity < 1)) {
    throw new RangeError(`Sparsity must be in (0, 1), got ${sparsity}`);
  }
  if (shape.rank % 16 !== 0 || shape.nEmbd % 32 !== 0 || shape.nFf % 32 !== 0) {
    throw new RangeError(`Shape ${shape.name}: rank must be a multiple of 16, dims of 32`);
  }
  const type = options.type ?? "f16";
  const dense = options.dense ?? false;
  const gen = new Generator(shape, options.seed ?? 1, sparsity);
  const { nEmbd: d, nFf, nLayer, nHead, nHeadKv, rank: r } = shape;
  const nEmbdGqa = (d / nHead) * nHeadKv;
  const progress = options.onProgress ?? (() => {});

  const metadata: GgufKv[] = [
    { key: "general.architecture", type: GgufValueType.STRING, value: "llama" },
    { key: "general.name", type: GgufValueType.STRING, value: `synthetic-${shape.name}` },
    { key: "llama.context_length", type: GgufValueType.UINT32, value: shape.nCtx },
    { key: "llama.embedding_length", type: GgufValueType.UINT32, value: d },
    { key: "llama.block_count", type: GgufValueType.UINT32, value: nLayer },
    { key: "llama.feed_forward_length", type: GgufValueType.UINT32, value: nFf },
    { key: "llama.rope.dimension_count", type: GgufValueType.UINT32, value: d / nHead },
    { key: "llama.attention.head_count", type: GgufValueType.UINT32, value: nHead },
    { key: "llama.attention.head_count_kv", type: GgufValueType.UINT32, value: nHeadKv },
    { key: "llama.attention.layer_norm_rms_epsilon", type: GgufValueType.FLOAT32, value: 1e-6 },
    { key: "llama.rope.freq_base", type: GgufValueType.FLOAT32, value: 10000 },
    { key: "general.file_type", type: GgufValueType.UINT32, value: 1 },
    ...(dense
      ? []
      : [{ key: "powerinfer.sparse_threshold", type: GgufValueType.FLOAT32, value: 0 } as GgufKv]),
    ...vocabMetadata(options.vocabPath ?? DEFAULT_VOCAB),
  ];

  const f16 = (name: string, ne: number[], make: () => Float32Array): GgufWriteTensor => ({
    name,
    type: GgmlType.F16,
    ne,
    data: () => {
      progress(name);
      return toF16(make());
    },
  });
  const ones = (name: string): GgufWriteTensor => ({
    name,
    type: GgmlType.F32,
    ne: [d],
    data: () => new Uint8Array(new Float32Array(d).fill(1).buffer),
  });

  const tensors: GgufWriteTensor[] = [
    f16("token_embd.weight", [d, VOCAB_SIZE], () => gen.tokenEmbd()),
  ];
  const std = 1 / Math.sqrt(d);
  for (let l = 0; l < nLayer; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      ones(`${p}attn_norm.weight`),
      ones(`${p}ffn_norm.weight`),
      f16(`${p}attn_q.weight`, [d, d], () => gen.random(`${p}attn_q`, d, d, std)),
      f16(`${p}attn_k.weight`, [d, nEmbdGqa], () => gen.random(`${p}attn_k`, nEmbdGqa, d, std)),
      f16(`${p}attn_v.weight`, [d, nEmbdGqa], () => gen.random(`${p}attn_v`, nEmbdGqa, d, std)),
      f16(`${p}attn_output.weight`, [d, d], () => gen.attnOutput(l)),
      f16(`${p}ffn_up.weight`, [d, nFf], () => gen.random(`${p}ffn_up`, nFf, d, std)),
      dense
        ? f16(`${p}ffn_down.weight`, [nFf, d], () => transpose(gen.downT(l), nFf, d))
        : f16(`${p}ffn_down_t.weight`, [d, nFf], () => gen.downT(l)),
      f16(`${p}ffn_gate.weight`, [d, nFf], () => gen.gate(l)),
    );
  }
  tensors.push(
    ones("output_norm.weight"),
    f16(
      "output.weight",
      [d, VOCAB_SIZE],
      () => gen.random("output", VOCAB_SIZE, d, LM_HEAD_SCALE * std),
    ),
  );
  if (!dense) {
    for (let l = 0; l < nLayer; l++) {
      tensors.push(
        f16(`blk.${l}.fc1.weight`, [d, 2 * r + 32], () => gen.fc1(l)),
        f16(`blk.${l}.fc2.weight`, [2 * r + 32, nFf], () => gen.fc2(l)),
      );
    }
  }

  const f16Path = type === "f16" ? options.out : `${options.out}.f16.tmp`;
  await writeGguf(f16Path, { magic: dense ? "GGUF" : "PWRI", metadata, tensors });
  if (type === "q4_0") {
    progress("quantizing to Q4_0");
    try {
      await quantizeModel(f16Path, options.out, "Q4_0");
    } finally {
      await Deno.remove(f16Path).catch(() => {});
    }
  }

  const activeFraction: number[] = [];
  for (let l = 0; l < nLayer; l++) {
    const p = gen.layer(l).p;
    activeFraction.push(p.reduce((s, v) => s + v, 0) / nFf);
  }
  let statsPath: string | null = null;
  const statsDir = options.statsDir === undefined
    ? join(dirname(options.out), "activation")
    : options.statsDir;
  if (statsDir !== null && !dense) {
    await Deno.mkdir(statsDir, { recursive: true });
    statsPath = join(statsDir, "activation_counts.json");
    const layers = Array.from(
      { length: nLayer },
      (_, l) => Array.from(gen.layer(l).p, (p) => Math.round(p * STATS_TOKENS)),
    );
    await Deno.writeTextFile(
      statsPath,
      JSON.stringify({
        format: "powerinfer-deno.activation",
        version: 1,
        tokens: STATS_TOKENS,
        model: options.out.split("/").pop(),
        threshold: 0,
        layers,
      }),
    );
  }
  return {
    path: options.out,
    byteLength: (await Deno.stat(options.out)).size,
    statsPath,
    activeFraction,
  };
}
