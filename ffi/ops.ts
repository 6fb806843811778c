/**
 * Typed wrappers over the native kernels: model code passes typed arrays, never pointers.
 * Counts are validated here (RangeError), every status goes through {@linkcode check}
 * (KernelError carrying `pi_last_error()`). Owners append their wrappers in their own block.
 *
 * @module
 */
import { KernelError } from "../src/errors.ts";
import { GGML_TYPES, type GgmlType, ggmlTypeName } from "../src/gguf/types.ts";
import { openNative } from "./library.ts";
import { PI_STATUS } from "./symbols.ts";

const STATUS_NAMES = new Map<number, string>(
  Object.entries(PI_STATUS).map(([name, code]) => [code, `PI_${name}`]),
);

/** The message the last failing kernel recorded on this thread ("" when none). */
export function lastKernelError(): string {
  const p = openNative().pi_last_error();
  return p === null ? "" : Deno.UnsafePointerView.getCString(p);
}

/**
 * Throws a {@linkcode KernelError} when `status` is not PI_OK.
 *
 * @param name The C function that returned `status`.
 * @param status Its return value.
 * @throws {KernelError} With the kernel's own message and the status code.
 */
export function check(name: string, status: number): void {
  if (status === 0) return;
  const code = STATUS_NAMES.get(status) ?? `status ${status}`;
  const detail = lastKernelError();
  throw new KernelError(`${name} failed with ${code}${detail ? `: ${detail}` : ""}`, status);
}

function assertCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
  }
}

// ---- foundation: core ----

/**
 * Sets how many threads the native kernels use (a process-wide setting).
 *
 * @param n Thread count; 0 restores the default, the number of physical cores.
 * @throws {RangeError} If `n` is not an integer in 0..1024.
 * @throws {NativeLibraryError} If the kernel library cannot be loaded.
 *
 * @example Run the kernels on one thread
 * ```ts ignore
 * import { strictEqual } from "node:assert/strict";
 * import { getThreads, setThreads } from "./ops.ts";
 * setThreads(1);
 * strictEqual(getThreads(), 1);
 * setThreads(0);
 * ```
 */
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > 1024) {
    throw new RangeError(`Thread count must be an integer in 0..1024, got ${n}`);
  }
  check("pi_threads_set", openNative().pi_threads_set(n));
}

/**
 * Threads the native kernels use now.
 *
 * @returns The thread count (at least 1).
 * @throws {NativeLibraryError} If the kernel library cannot be loaded.
 *
 * @example Default is the physical core count
 * ```ts ignore
 * import { strictEqual } from "node:assert/strict";
 * import { getThreads, physicalCores } from "./ops.ts";
 * strictEqual(getThreads(), physicalCores());
 * ```
 */
export function getThreads(): number {
  return openNative().pi_threads_get();
}

/**
 * Physical CPU cores this process may run on (the default thread count).
 *
 * @returns Distinct (package, core) pairs among the allowed CPUs, or the online CPU count.
 * @throws {NativeLibraryError} If the kernel library cannot be loaded.
 *
 * @example At least one
 * ```ts ignore
 * import { ok } from "node:assert/strict";
 * import { physicalCores } from "./ops.ts";
 * ok(physicalCores() >= 1);
 * ```
 */
export function physicalCores(): number {
  return openNative().pi_physical_cores();
}

/** Whether the AVX2/FMA/F16C kernels are active (false on other CPUs or PI_FORCE_SCALAR=1). */
export function hasAvx2(): boolean {
  return (openNative().pi_cpu_features() & 7) === 7;
}

// ---- foundation: f16.c ----

function convertLengths(name: string, src: ArrayLike<number>, out: ArrayLike<number>): void {
  if (src.length !== out.length) {
    throw new RangeError(`${name}: src has ${src.length} elements, out has ${out.length}`);
  }
}

/** Widens IEEE fp16 bits to f32 (exact). */
export function f16ToF32(src: Uint16Array, out: Float32Array): void {
  convertLengths("f16ToF32", src, out);
  check("pi_f16_to_f32", openNative().pi_f16_to_f32(out, src, BigInt(src.length)));
}

/** Rounds f32 to IEEE fp16 bits (round to nearest even, like F16C). */
export function f32ToF16(src: Float32Array, out: Uint16Array): void {
  convertLengths("f32ToF16", src, out);
  check("pi_f32_to_f16", openNative().pi_f32_to_f16(out, src, BigInt(src.length)));
}

/** Widens bf16 bits to f32 (exact). */
export function bf16ToF32(src: Uint16Array, out: Float32Array): void {
  convertLengths("bf16ToF32", src, out);
  check("pi_bf16_to_f32", openNative().pi_bf16_to_f32(out, src, BigInt(src.length)));
}

/** Scalar reference of {@linkcode f16ToF32} (tests). */
export function f16ToF32Ref(src: Uint16Array, out: Float32Array): void {
  convertLengths("f16ToF32Ref", src, out);
  check("pi_f16_to_f32_ref", openNative().pi_f16_to_f32_ref(out, src, BigInt(src.length)));
}

/** Scalar reference of {@linkcode f32ToF16} (tests). */
export function f32ToF16Ref(src: Float32Array, out: Uint16Array): void {
  convertLengths("f32ToF16Ref", src, out);
  check("pi_f32_to_f16_ref", openNative().pi_f32_to_f16_ref(out, src, BigInt(src.length)));
}

// ---- foundation: norm.c (spec model.md §2) ----

function normRows(name: string, out: Float32Array, x: Float32Array, nCols: number): bigint {
  if (nCols === 0 || x.length % nCols !== 0 || out.length !== x.length) {
    throw new RangeError(`${name} lengths: x ${x.length}, w ${nCols}, out ${out.length}`);
  }
  return BigInt(x.length / nCols);
}

/** RMSNorm of every row of `x` (`x.length / w.length` rows), times `w`. */
export function rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, eps: number): void {
  const nRows = normRows("rmsNorm", out, x, w.length);
  check("pi_rmsnorm_f32", openNative().pi_rmsnorm_f32(out, x, w, nRows, BigInt(w.length), eps));
}

/** Scalar reference of {@linkcode rmsNorm} (tests). */
export function rmsNormRef(out: Float32Array, x: Float32Array, w: Float32Array, eps: number): void {
  const nRows = normRows("rmsNormRef", out, x, w.length);
  check(
    "pi_rmsnorm_f32_ref",
    openNative().pi_rmsnorm_f32_ref(out, x, w, nRows, BigInt(w.length), eps),
  );
}

function layerNormArgs(
  name: string,
  out: Float32Array,
  x: Float32Array,
  w: Float32Array,
  b: Float32Array | null,
): bigint {
  if (b && b.length !== w.length) {
    throw new RangeError(`${name}: bias has ${b.length} elements, weight ${w.length}`);
  }
  return normRows(name, out, x, w.length);
}

/** LayerNorm of every row of `x`, times `w`, plus `b` when given. */
export function layerNorm(
  out: Float32Array,
  x: Float32Array,
  w: Float32Array,
  b: Float32Array | null,
  eps: number,
): void {
  const nRows = layerNormArgs("layerNorm", out, x, w, b);
  check(
    "pi_layernorm_f32",
    openNative().pi_layernorm_f32(out, x, w, b, nRows, BigInt(w.length), eps),
  );
}

/** Scalar reference of {@linkcode layerNorm} (tests). */
export function layerNormRef(
  out: Float32Array,
  x: Float32Array,
  w: Float32Array,
  b: Float32Array | null,
  eps: number,
): void {
  const nRows = layerNormArgs("layerNormRef", out, x, w, b);
  check(
    "pi_layernorm_f32_ref",
    openNative().pi_layernorm_f32_ref(out, x, w, b, nRows, BigInt(w.length), eps),
  );
}

// ---- foundation: matmul.c ----

/** Bytes of one row of `nCols` elements of `type`; throws RangeError when they do not fit. */
export function rowByteLength(type: GgmlType, nCols: number): number {
  const info = GGML_TYPES.get(type);
  if (!info) throw new RangeError(`Unknown ggml type ${type}`);
  if (nCols % info.blockSize !== 0) {
    throw new RangeError(
      `Row length ${nCols} is not a multiple of the ${info.name} block size ${info.blockSize}`,
    );
  }
  return (nCols / info.blockSize) * info.typeSize;
}

function matmulArgs(
  name: string,
  out: Float32Array,
  w: Uint8Array,
  wType: GgmlType,
  nRows: number,
  nCols: number,
  x: Float32Array,
  nTokens: number,
): void {
  assertCount(`${name} nRows`, nRows);
  assertCount(`${name} nCols`, nCols);
  assertCount(`${name} nTokens`, nTokens);
  if (nCols === 0) throw new RangeError(`${name}: nCols must be positive`);
  const wBytes = nRows * rowByteLength(wType, nCols);
  if (w.byteLength < wBytes) {
    throw new RangeError(
      `${name}: ${
        ggmlTypeName(wType)
      } weights need ${wBytes} bytes for ${nRows}x${nCols}, got ${w.byteLength}`,
    );
  }
  if (x.length !== nTokens * nCols) {
    throw new RangeError(`${name}: x has ${x.length} elements, expected ${nTokens}x${nCols}`);
  }
  if (out.length !== nTokens * nRows) {
    throw new RangeError(`${name}: out has ${out.length} elements, expected ${nTokens}x${nRows}`);
  }
}

/**
 * `out[t*nRows + r] = dot(W[r], x[t])` with x converted to W's vec-dot type (F16: rounded to
 * fp16; Q4_0/Q8_0: Q8_0; Q6_K: Q8_K). Threaded over rows; results do not depend on the thread
 * count or on how tokens are batched.
 *
 * @param out `[nTokens, nRows]` f32.
 * @param w `[nRows, nCols]` weights in ggml row layout (e.g. a mapped tensor view).
 * @param x `[nTokens, nCols]` f32 activations.
 * @throws {RangeError} If the lengths do not fit.
 * @throws {KernelError} If the type is not supported by the built kernels.
 */
export function matmul(
  out: Float32Array,
  w: Uint8Array,
  wType: GgmlType,
  nRows: number,
  nCols: number,
  x: Float32Array,
  nTokens: number,
): void {
  matmulArgs("matmul", out, w, wType, nRows, nCols, x, nTokens);
  check(
    "pi_matmul",
    openNative().pi_matmul(out, w, wType, BigInt(nRows), BigInt(nCols), x, BigInt(nTokens)),
  );
}

/** Scalar reference of {@linkcode matmul} (single thread, ggml's scalar summation). */
export function matmulRef(
  out: Float32Array,
  w: Uint8Array,
  wType: GgmlType,
  nRows: number,
  nCols: number,
  x: Float32Array,
  nTokens: number,
): void {
  matmulArgs("matmulRef", out, w, wType, nRows, nCols, x, nTokens);
  check(
    "pi_matmul_ref",
    openNative().pi_matmul_ref(out, w, wType, BigInt(nRows), BigInt(nCols), x, BigInt(nTokens)),
  );
}

// ---- foundation: bench helpers ----

/** Calls the empty native function (measures FFI overhead). */
export function nativeNoop(): void {
  openNative().pi_noop();
}

/** Streams `buf` `nIters` times on all kernel threads; returns the wrapping u64 checksum. */
export function bandwidthRead(buf: Uint8Array, nIters = 1): bigint {
  assertCount("bandwidthRead nIters", nIters);
  const sum = new BigUint64Array(1);
  check(
    "pi_bandwidth_read",
    openNative().pi_bandwidth_read(buf, BigInt(buf.byteLength), nIters, sum),
  );
  return sum[0]!;
}

/**
 * Reads the rows of `rowBytes` bytes that start at the byte `offsets` of `buf`, `nIters` times on
 * all pool threads, as the sparse FFN gathers its active neurons' rows; returns the wrapping sum,
 * per row, of its u64 words and its last `rowBytes % 8` bytes (bench only).
 */
export function bandwidthGather(
  buf: Uint8Array,
  rowBytes: number,
  offsets: BigInt64Array,
  nIters = 1,
): bigint {
  assertCount("bandwidthGather nIters", nIters);
  const sum = new BigUint64Array(1);
  check(
    "pi_bandwidth_gather",
    openNative().pi_bandwidth_gather(
      buf,
      BigInt(buf.byteLength),
      BigInt(rowBytes),
      offsets,
      BigInt(offsets.length),
      nIters,
      sum,
    ),
  );
  return sum[0]!;
}

// ---- H-engine: rope.c, attention.c, activation.c ----

/** RoPE in place on x `[nTokens, nHeads, headDim]`; mode 0 = adjacent pairs, 2 = NeoX halves. */
export function rope(
  x: Float32Array,
  nTokens: number,
  nHeads: number,
  headDim: number,
  nDims: number,
  positions: Int32Array,
  mode: 0 | 2,
  freqBase: number,
  freqScale: number,
): void {
  if (x.length !== nTokens * nHeads * headDim || positions.length < nTokens) {
    throw new RangeError(
      `rope lengths: x ${x.length}, expected ${nTokens}*${nHeads}*${headDim}; positions ${positions.length}`,
    );
  }
  check(
    "pi_rope_f32",
    openNative().pi_rope_f32(
      x,
      BigInt(nTokens),
      BigInt(nHeads),
      BigInt(headDim),
      BigInt(nDims),
      positions,
      mode,
      freqBase,
      freqScale,
    ),
  );
}

/** Writes k, v rows `[nTokens, nEmbdGqa]` into cache cells `slots` (V transposed). */
export function kvStore(
  kCache: Uint16Array | Float32Array,
  vCache: Uint16Array | Float32Array,
  nCtx: number,
  nEmbdGqa: number,
  k: Float32Array,
  v: Float32Array,
  nTokens: number,
  slots: Int32Array,
): void {
  const f16 = kCache instanceof Uint16Array;
  if (
    kCache.length !== nCtx * nEmbdGqa || vCache.length !== kCache.length ||
    (vCache instanceof Uint16Array) !== f16 || k.length < nTokens * nEmbdGqa ||
    v.length < nTokens * nEmbdGqa || slots.length < nTokens
  ) {
    throw new RangeError(`kvStore lengths: cache ${kCache.length}/${vCache.length}, k ${k.length}`);
  }
  check(
    "pi_kv_store",
    openNative().pi_kv_store(
      kCache,
      vCache,
      f16 ? 1 : 0,
      BigInt(nCtx),
      BigInt(nEmbdGqa),
      k,
      v,
      BigInt(nTokens),
      slots,
    ),
  );
}

/** Causal GQA attention over one cache layer; out and q `[nTokens, nHead*headDim]`. */
export function attention(
  out: Float32Array,
  q: Float32Array,
  kCache: Uint16Array | Float32Array,
  vCache: Uint16Array | Float32Array,
  nCtx: number,
  nKv: number,
  nTokens: number,
  nHead: number,
  nHeadKv: number,
  headDim: number,
  queryPositions: Int32Array,
  cellPositions: Int32Array,
  scale: number,
): void {
  attentionCall(
    false,
    out,
    q,
    kCache,
    vCache,
    nCtx,
    nKv,
    nTokens,
    nHead,
    nHeadKv,
    headDim,
    queryPositions,
    cellPositions,
    scale,
  );
}

/** {@linkcode attention} with the scalar reference kernel (dot products in index order). */
export function attentionRef(
  out: Float32Array,
  q: Float32Array,
  kCache: Uint16Array | Float32Array,
  vCache: Uint16Array | Float32Array,
  nCtx: number,
  nKv: number,
  nTokens: number,
  nHead: number,
  nHeadKv: number,
  headDim: number,
  queryPositions: Int32Array,
  cellPositions: Int32Array,
  scale: number,
): void {
  attentionCall(
    true,
    out,
    q,
    kCache,
    vCache,
    nCtx,
    nKv,
    nTokens,
    nHead,
    nHeadKv,
    headDim,
    queryPositions,
    cellPositions,
    scale,
  );
}

function attentionCall(
  ref: boolean,
  out: Float32Array,
  q: Float32Array,
  kCache: Uint16Array | Float32Array,
  vCache: Uint16Array | Float32Array,
  nCtx: number,
  nKv: number,
  nTokens: number,
  nHead: number,
  nHeadKv: number,
  headDim: number,
  queryPositions: Int32Array,
  cellPositions: Int32Array,
  scale: number,
): void {
  const f16 = kCache instanceof Uint16Array;
  const nQ = nTokens * nHead * headDim;
  if (
    out.length < nQ || q.length < nQ || kCache.length !== nCtx * nHeadKv * headDim ||
    vCache.length !== kCache.length || queryPositions.length < nTokens ||
    cellPositions.length < nKv || nKv > nCtx
  ) {
    throw new RangeError(
      `attention lengths: out ${out.length}, q ${q.length}, cache ${kCache.length}`,
    );
  }
  const native = openNative();
  const fn = ref ? native.pi_attention_f32_ref : native.pi_attention_f32;
  check(
    ref ? "pi_attention_f32_ref" : "pi_attention_f32",
    fn(
      out,
      q,
      kCache,
      vCache,
      f16 ? 1 : 0,
      BigInt(nCtx),
      BigInt(nKv),
      BigInt(nTokens),
      BigInt(nHead),
      BigInt(nHeadKv),
      BigInt(headDim),
      queryPositions,
      cellPositions,
      scale,
    ),
  );
}

const ACTIVATION_KINDS = { silu_mul: 0, relu_mul: 1, relu_relu_mul: 2, relu: 3 } as const;

/** Gated activation: out = act(gate) (· up); kinds "silu_mul" (fp16 table), "relu_mul", "relu_relu_mul", "relu". */
export function activation(
  out: Float32Array,
  gate: Float32Array,
  up: Float32Array | null,
  kind: keyof typeof ACTIVATION_KINDS,
): void {
  const n = out.length;
  if (gate.length !== n || (kind !== "relu" && up?.length !== n)) {
    throw new RangeError(`activation lengths: out ${n}, gate ${gate.length}, up ${up?.length}`);
  }
  check(
    "pi_activation_f32",
    openNative().pi_activation_f32(out, gate, up, BigInt(n), ACTIVATION_KINDS[kind]),
  );
}

// ---- H-quant: quant.c (weight quantization, spec q4_0.md §1-§3) ----

/** Types {@linkcode quantizeRows} writes and {@linkcode dequantizeRows} reads. */
const QUANT_TYPES: ReadonlySet<number> = new Set([0, 1, 2, 6, 8, 14]);

function quantShape(name: string, type: GgmlType, nRows: number, nCols: number): number {
  assertCount(`${name} nRows`, nRows);
  assertCount(`${name} nCols`, nCols);
  if (!QUANT_TYPES.has(type)) {
    throw new RangeError(
      `${name}: type ${ggmlTypeName(type)}: expected F32, F16, Q4_0, Q5_0, Q8_0 or Q6_K`,
    );
  }
  return rowByteLength(type, nCols) * nRows;
}

function quantArgs(
  dst: Uint8Array,
  dstType: GgmlType,
  src: Uint8Array | Float32Array | Uint16Array,
  srcType: GgmlType,
  nRows: number,
  nCols: number,
): void {
  const dstBytes = quantShape("quantizeRows", dstType, nRows, nCols);
  if (srcType !== 0 && srcType !== 1) {
    throw new RangeError(`quantizeRows: source type ${ggmlTypeName(srcType)}: expected F32 or F16`);
  }
  const srcBytes = nRows * nCols * (srcType === 0 ? 4 : 2);
  if (dst.byteLength !== dstBytes || src.byteLength !== srcBytes) {
    throw new RangeError(
      `quantizeRows [${nRows}, ${nCols}]: dst ${dst.byteLength} bytes (expected ${dstBytes}), src ${src.byteLength} bytes (expected ${srcBytes})`,
    );
  }
}

/**
 * Quantizes `nRows` rows of `nCols` values (F32 or F16 bytes) to `dstType` (F32, F16, Q4_0,
 * Q5_0, Q8_0 reference rounding, Q6_K), threaded; bit-exact with the TS references of
 * src/quant/. `fused` (default true): Q4_0/Q5_0 evaluate `x·id + 8.5` as one FMA, like
 * PowerInfer's x86 `quantize` binaries.
 */
export function quantizeRows(
  dst: Uint8Array,
  dstType: GgmlType,
  src: Uint8Array | Float32Array | Uint16Array,
  srcType: GgmlType,
  nRows: number,
  nCols: number,
  options: { fused?: boolean; ref?: boolean } = {},
): void {
  quantArgs(dst, dstType, src, srcType, nRows, nCols);
  const flags = options.fused === false ? 1 : 0;
  const native = openNative();
  const fn = options.ref ? native.pi_quantize_ref : native.pi_quantize;
  check(
    options.ref ? "pi_quantize_ref" : "pi_quantize",
    fn(dst, dstType, src, srcType, BigInt(nRows), BigInt(nCols), flags),
  );
}

/**
 * {@linkcode quantizeRows} on a worker thread: resolves when `dst` is filled. `dst` and `src`
 * must not be touched until then. `serial`: computed on that worker thread alone, not on the
 * kernel thread pool, so that it can run beside other kernel calls (same bytes).
 */
export async function quantizeRowsAsync(
  dst: Uint8Array,
  dstType: GgmlType,
  src: Uint8Array | Float32Array | Uint16Array,
  srcType: GgmlType,
  nRows: number,
  nCols: number,
  options: { fused?: boolean; serial?: boolean } = {},
): Promise<void> {
  quantArgs(dst, dstType, src, srcType, nRows, nCols);
  const flags = (options.fused === false ? 1 : 0) | (options.serial ? 2 : 0);
  const status = await openNative().pi_quantize_nonblocking(
    dst,
    dstType,
    src,
    srcType,
    BigInt(nRows),
    BigInt(nCols),
    flags,
  );
  check("pi_quantize", status);
}

/** Widens `nRows` rows of `nCols` values of `srcType` (F32, F16, Q4_0, Q5_0, Q8_0, Q6_K) to f32. */
export function dequantizeRows(
  dst: Float32Array,
  src: Uint8Array,
  srcType: GgmlType,
  nRows: number,
  nCols: number,
): void {
  const srcBytes = quantShape("dequantizeRows", srcType, nRows, nCols);
  if (dst.length !== nRows * nCols || src.byteLength !== srcBytes) {
    throw new RangeError(
      `dequantizeRows [${nRows}, ${nCols}]: dst ${dst.length} values, src ${src.byteLength} bytes (expected ${srcBytes})`,
    );
  }
  check(
    "pi_dequantize",
    openNative().pi_dequantize(dst, src, srcType, BigInt(nRows), BigInt(nCols)),
  );
}

// ---- H-speed: quant_dot.c (spec q4_0.md §3-§4) ----

function quantizeActArgs(name: string, x: Float32Array, block: number, blockBytes: number) {
  if (x.length % block !== 0) {
    throw new RangeError(`${name}: length ${x.length} is not a multiple of ${block}`);
  }
  return new Uint8Array((x.length / block) * blockBytes);
}

/** Quantizes activations to Q8_0 like PowerInfer's x86 path (multiplier 127/amax, halves to even). */
export function quantizeQ8_0Act(x: Float32Array): Uint8Array {
  const y = quantizeActArgs("quantizeQ8_0Act", x, 32, 34);
  check("pi_quantize_q8_0_act", openNative().pi_quantize_q8_0_act(x, y, BigInt(x.length)));
  return y;
}

/** Scalar reference of {@linkcode quantizeQ8_0Act} (same bits). */
export function quantizeQ8_0ActRef(x: Float32Array): Uint8Array {
  const y = quantizeActArgs("quantizeQ8_0ActRef", x, 32, 34);
  check("pi_quantize_q8_0_act_ref", openNative().pi_quantize_q8_0_act_ref(x, y, BigInt(x.length)));
  return y;
}

/** Quantizes activations to Q8_K (ggml reference; the activation format of Q6_K dots). */
export function quantizeQ8_KAct(x: Float32Array): Uint8Array {
  const y = quantizeActArgs("quantizeQ8_KAct", x, 256, 292);
  check("pi_quantize_q8_k_act", openNative().pi_quantize_q8_k_act(x, y, BigInt(x.length)));
  return y;
}

function vecDotRun(
  name: "pi_vec_dot_quant" | "pi_vec_dot_quant_ref",
  wType: GgmlType,
  n: number,
  w: Uint8Array,
  y: Uint8Array,
): number {
  assertCount(`${name} n`, n);
  const yBytes = wType === 14 ? (n / 256) * 292 : (n / 32) * 34;
  if (w.byteLength < rowByteLength(wType, n) || y.byteLength < yBytes) {
    throw new RangeError(`${name}: buffers too short for ${n} elements`);
  }
  const out = new Float32Array(1);
  check(name, openNative()[name](wType, BigInt(n), w, y, out));
  return out[0]!;
}

/** Dot of one Q4_0/Q8_0/Q6_K weight row with an activation row in Q8_0/Q8_K (AVX2 when present). */
export function vecDotQuant(wType: GgmlType, n: number, w: Uint8Array, y: Uint8Array): number {
  return vecDotRun("pi_vec_dot_quant", wType, n, w, y);
}

/** Scalar reference of {@linkcode vecDotQuant}. */
export function vecDotQuantRef(wType: GgmlType, n: number, w: Uint8Array, y: Uint8Array): number {
  return vecDotRun("pi_vec_dot_quant_ref", wType, n, w, y);
}

// ---- H-speed: sparse.c (spec model.md §6.4; bit-identical for any thread count) ----

function sparseArgs(
  name: string,
  out: Float32Array,
  w: Uint8Array,
  wType: GgmlType,
  nRows: number,
  nCols: number,
  x: Float32Array,
  xCols: number,
  nTokens: number,
  outCols: number,
  pred: Float32Array,
  gpuIdx: Uint8Array | null,
): void {
  assertCount(`${name} nRows`, nRows);
  assertCount(`${name} nCols`, nCols);
  assertCount(`${name} nTokens`, nTokens);
  if (nCols === 0) throw new RangeError(`${name}: nCols must be positive`);
  const wBytes = nRows * rowByteLength(wType, nCols);
  if (w.byteLength < wBytes) {
    throw new RangeError(`${name}: weights need ${wBytes} bytes, got ${w.byteLength}`);
  }
  if (x.length !== nTokens * xCols || out.length !== nTokens * outCols) {
    throw new RangeError(
      `${name}: input has ${x.length} elements (expected ${nTokens}x${xCols}), out ${out.length} (expected ${nTokens}x${outCols})`,
    );
  }
  if (pred.length !== nTokens * nRows) {
    throw new RangeError(`${name}: pred has ${pred.length} elements, expected ${nTokens}x${nRows}`);
  }
  if (gpuIdx && gpuIdx.length < nRows) {
    throw new RangeError(`${name}: gpuIdx has ${gpuIdx.length} entries, expected ${nRows}`);
  }
}

/**
 * `out[t,j] = dot(W[j], x[t])` for active cold neurons (`pred[t,j] >= threshold` and not
 * `gpuIdx[j]`), else exactly 0. W is F32, F16, Q4_0 or Q8_0 `[nRows, nCols]`.
 */
export function sparseMatmul(
  out: Float32Array,
  w: Uint8Array,
  wType: GgmlType,
  nRows: number,
  nCols: number,
  x: Float32Array,
  nTokens: number,
  pred: Float32Array,
  threshold: number,
  gpuIdx: Uint8Array | null,
): void {
  sparseArgs("sparseMatmul", out, w, wType, nRows, nCols, x, nCols, nTokens, nRows, pred, gpuIdx);
  check(
    "pi_sparse_matmul",
    openNative().pi_sparse_matmul(
      out,
      w,
      wType,
      BigInt(nRows),
      BigInt(nCols),
      x,
      BigInt(nTokens),
      pred,
      threshold,
      gpuIdx,
    ),
  );
}

/** Scalar single-thread twin of {@linkcode sparseMatmul} (tests). */
export function sparseMatmulRef(
  out: Float32Array,
  w: Uint8Array,
  wType: GgmlType,
  nRows: number,
  nCols: number,
  x: Float32Array,
  nTokens: number,
  pred: Float32Array,
  threshold: number,
  gpuIdx: Uint8Array | null,
): void {
  sparseArgs(
    "sparseMatmulRef",
    out,
    w,
    wType,
    nRows,
    nCols,
    x,
    nCols,
    nTokens,
    nRows,
    pred,
    gpuIdx,
  );
  check(
    "pi_sparse_matmul_ref",
    openNative().pi_sparse_matmul_ref(
      out,
      w,
      wType,
      BigInt(nRows),
      BigInt(nCols),
      x,
      BigInt(nTokens),
      pred,
      threshold,
      gpuIdx,
    ),
  );
}

/**
 * `out[t] = Σ_j a[t,j]·Wt[j]` over active cold neurons in ascending order (out overwritten);
 * Wt is the transposed down projection `[nRows = n_ff, nCols = n_embd]`. Skips neurons whose
 * converted activation is zero (model.md §6.4).
 */
export function sparseAxpy(
  out: Float32Array,
  wt: Uint8Array,
  wType: GgmlType,
  nRows: number,
  nCols: number,
  a: Float32Array,
  nTokens: number,
  pred: Float32Array,
  threshold: number,
  gpuIdx: Uint8Array | null,
): void {
  sparseArgs("sparseAxpy", out, wt, wType, nRows, nCols, a, nRows, nTokens, nCols, pred, gpuIdx);
  check(
    "pi_sparse_axpy",
    openNative().pi_sparse_axpy(
      out,
      wt,
      wType,
      BigInt(nRows),
      BigInt(nCols),
      a,
      BigInt(nTokens),
      pred,
      threshold,
      gpuIdx,
    ),
  );
}

/** Scalar single-thread twin of {@linkcode sparseAxpy} (tests). */
export function sparseAxpyRef(
  out: Float32Array,
  wt: Uint8Array,
  wType: GgmlType,
  nRows: number,
  nCols: number,
  a: Float32Array,
  nTokens: number,
  pred: Float32Array,
  threshold: number,
  gpuIdx: Uint8Array | null,
): void {
  sparseArgs("sparseAxpyRef", out, wt, wType, nRows, nCols, a, nRows, nTokens, nCols, pred, gpuIdx);
  check(
    "pi_sparse_axpy_ref",
    openNative().pi_sparse_axpy_ref(
      out,
      wt,
      wType,
      BigInt(nRows),
      BigInt(nCols),
      a,
      BigInt(nTokens),
      pred,
      threshold,
      gpuIdx,
    ),
  );
}

/** A weight matrix as the fused sparse FFN needs it (structurally a backend `WeightTensor`). */
export interface SparseFfnWeight {
  readonly data: Uint8Array;
  readonly type: GgmlType;
  readonly nRows: number;
  readonly nCols: number;
}

/** The tensors of one sparse FFN layer for {@linkcode sparseFfn}. */
export interface SparseFfnTensors {
  /** Predictor `[nHidden, nEmbd]` and `[nFf, nHidden]` (F32, F16, Q4_0 or Q8_0). */
  readonly fc1: SparseFfnWeight;
  readonly fc2: SparseFfnWeight;
  /** `[nFf, nEmbd]`; gate null for Falcon (kind "relu"). */
  readonly up: SparseFfnWeight;
  readonly gate: SparseFfnWeight | null;
  /** Transposed down projection `[nFf, nEmbd]`. */
  readonly downT: SparseFfnWeight;
}

const SPARSE_FFN_KINDS = { relu_mul: 1, relu_relu_mul: 2, relu: 3 } as const;

/**
 * One layer's whole sparse FFN in ONE native call (per-token FFI cost: one call per layer):
 * `pred = fc2·ReLU(fc1·z)`; for active cold neurons `a_j = act(gate_j·f, up_j·f)`;
 * `out = Σ_j a_j·downT[j]`. Gives the same bits as the separate ops the engine uses
 * (`matmul` ×2 + ReLU, `sparseMatmul` for up and gate, `activation`, `sparseAxpy`), so the
 * engine can switch to it without changing results: replace the body of
 * `src/model/sparse.ts` `sparseFfn()` (when the backend is the CPU one and no
 * `onActivation` hook is set) by one call, then add the hot side as before with `pred`.
 *
 * @param out FFN output `[nTokens, nEmbd]` (overwritten).
 * @param f Normalised FFN input `[nTokens, nEmbd]`.
 * @param z Predictor input (un-normalised residual) `[nTokens, nEmbd]`.
 * @param nTokens Tokens in the batch.
 * @param w The layer's tensors.
 * @param kind "relu_mul" (llama ReGLU), "relu_relu_mul" (bamboo), "relu" (falcon, gate null).
 * @param threshold Neuron j is active iff `pred >= threshold`.
 * @param gpuIdx 1 = hot neuron (skipped), or null.
 * @param pred Receives the predictor output `[nTokens, nFf]`.
 * @param act Optional: receives `a` `[nTokens, nFf]` (0 for skipped neurons).
 * @throws {RangeError} On inconsistent shapes; {KernelError} on a kernel failure.
 */
export function sparseFfn(
  out: Float32Array,
  f: Float32Array,
  z: Float32Array,
  nTokens: number,
  w: SparseFfnTensors,
  kind: keyof typeof SPARSE_FFN_KINDS,
  threshold: number,
  gpuIdx: Uint8Array | null,
  pred: Float32Array,
  act: Float32Array | null = null,
): void {
  const nEmbd = w.downT.nCols;
  const nFf = w.up.nRows;
  const nHidden = w.fc1.nRows;
  if (
    w.up.nCols !== nEmbd || w.downT.nRows !== nFf || w.fc1.nCols !== nEmbd ||
    w.fc2.nRows !== nFf || w.fc2.nCols !== nHidden ||
    (w.gate !== null && (w.gate.nRows !== nFf || w.gate.nCols !== nEmbd)) ||
    (kind !== "relu" && w.gate === null)
  ) {
    throw new RangeError(`sparseFfn: inconsistent tensor shapes (nEmbd ${nEmbd}, nFf ${nFf})`);
  }
  for (const t of [w.fc1, w.fc2, w.up, w.gate, w.downT]) {
    if (t && t.data.byteLength < t.nRows * rowByteLength(t.type, t.nCols)) {
      throw new RangeError(`sparseFfn: a ${t.nRows}x${t.nCols} weight has too few bytes`);
    }
  }
  if (
    f.length !== nTokens * nEmbd || z.length !== nTokens * nEmbd ||
    out.length !== nTokens * nEmbd || pred.length !== nTokens * nFf ||
    (act !== null && act.length !== nTokens * nFf) || (gpuIdx !== null && gpuIdx.length < nFf)
  ) {
    throw new RangeError(`sparseFfn: buffer lengths do not match nTokens ${nTokens}`);
  }
  check(
    "pi_sparse_ffn",
    openNative().pi_sparse_ffn(
      out,
      f,
      z,
      BigInt(nTokens),
      BigInt(nEmbd),
      BigInt(nFf),
      w.fc1.data,
      w.fc1.type,
      w.fc2.data,
      w.fc2.type,
      BigInt(nHidden),
      w.up.data,
      w.up.type,
      w.gate?.data ?? null,
      w.gate?.type ?? 0,
      w.downT.data,
      w.downT.type,
      SPARSE_FFN_KINDS[kind],
      threshold,
      gpuIdx,
      pred,
      act,
    ),
  );
}

// ---- page-cache residency of a mapped view (mmap.c) ----

/**
 * Bytes of `view` (a view of a file mapping) that are in the page cache (mincore; 0 where the
 * kernel will not tell).
 */
export function mmapResidentBytes(view: Uint8Array): number {
  if (view.byteLength === 0) return 0;
  const out = new BigUint64Array(1);
  check(
    "pi_mmap_resident",
    openNative().pi_mmap_resident(view, BigInt(view.byteLength), new Uint8Array(out.buffer)),
  );
  return Number(out[0]);
}

// ---- quantizeModel's output file (quant.c) ----

/**
 * Creates (truncates) `path` for writing at explicit offsets, with O_DIRECT when `direct` and the
 * file system allows it (buffers, lengths and offsets must then be multiples of 4096; see
 * {@linkcode alignedBuffer}). Returns the file descriptor for {@linkcode filePwrite}.
 */
export function fileCreate(path: string, direct: boolean): number {
  const fd = new Int32Array(1);
  const cpath = new TextEncoder().encode(`${path}\0`);
  check("pi_file_create", openNative().pi_file_create(cpath, direct ? 1 : 0, fd));
  return fd[0]!;
}

/** Writes all of `bytes` at `offsetBytes` (synchronously). */
export function filePwrite(fd: number, bytes: Uint8Array, offsetBytes: number): void {
  check(
    "pi_file_pwrite",
    openNative().pi_file_pwrite(fd, bytes, BigInt(bytes.byteLength), BigInt(offsetBytes)),
  );
}

/**
 * {@linkcode filePwrite} on a worker thread; `bytes` must not be touched until it settles. On
 * failure the write is retried on the calling thread, whose error message names the cause.
 */
export async function filePwriteAsync(
  fd: number,
  bytes: Uint8Array,
  offsetBytes: number,
): Promise<void> {
  const status = await openNative().pi_file_pwrite_nonblocking(
    fd,
    bytes,
    BigInt(bytes.byteLength),
    BigInt(offsetBytes),
  );
  if (status !== 0) filePwrite(fd, bytes, offsetBytes);
}

/** Truncates to `byteLength` (-1: keep), fdatasync()s when `sync`, and closes (always). */
export function fileClose(fd: number, byteLength: number, sync: boolean): void {
  check("pi_file_close", openNative().pi_file_close(fd, BigInt(byteLength), sync ? 1 : 0));
}

/** A zeroed `byteLength`-byte view whose address is a multiple of `alignment` (a power of 2). */
export function alignedBuffer(byteLength: number, alignment = 4096): Uint8Array {
  const raw = new Uint8Array(byteLength + alignment);
  const address = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(raw)));
  const skip = (alignment - (address % alignment)) % alignment;
  return raw.subarray(skip, skip + byteLength);
}

/** Opens `path` read-only (O_DIRECT when `direct` and allowed); returns the descriptor. */
export function fileOpenRead(path: string, direct: boolean): number {
  const fd = new Int32Array(1);
  const cpath = new TextEncoder().encode(`${path}\0`);
  check("pi_file_open_read", openNative().pi_file_open_read(cpath, direct ? 1 : 0, fd));
  return fd[0]!;
}

/**
 * Fills `bytes` from `offsetBytes` on a worker thread (short only at the end of the file);
 * `bytes` must not be touched until it settles. A failure is retried on the calling thread,
 * whose error message names the cause.
 */
export async function filePreadAsync(
  fd: number,
  bytes: Uint8Array,
  offsetBytes: number,
): Promise<void> {
  const n = BigInt(bytes.byteLength);
  const status = await openNative().pi_file_pread_nonblocking(fd, bytes, n, BigInt(offsetBytes));
  if (status !== 0) {
    check("pi_file_pread", openNative().pi_file_pread(fd, bytes, n, BigInt(offsetBytes)));
  }
}
