/**
 * Whole-model quantization like PowerInfer's `quantize` (shared/spec/q4_0.md §5): which tensor
 * becomes which type, what the header says, and a streaming rewrite of the file tensor by tensor
 * through the GGUF writer (a 40 GB input never has to fit in memory: sources are mmapped views
 * and only one output tensor is in memory at a time).
 *
 * @module
 */
import { basename, dirname, join, resolve } from "node:path";
import { FileWriteError, PowerInferError, QuantizeError } from "../errors.ts";
import {
  alignUp,
  GgmlType,
  ggmlTypeName,
  type GgufKv,
  GgufValueType,
  tensorByteSize,
} from "../gguf/types.ts";
import type { GgufFile, GgufTensorInfo } from "../gguf/reader.ts";
import { openGguf } from "../gguf/open.ts";
import { type GgufLayout, type GgufWriteSpec, layoutGguf, writeGguf } from "../gguf/writer.ts";
import {
  checkInputFile,
  checkOutputPath,
  fileWriteError,
  tempPathBeside,
} from "../gguf/output_file.ts";
import * as native from "../../ffi/ops.ts";
import { dequantize, quantize } from "./quantize.ts";

/** Target types `quantizeModel` accepts. */
export type QuantizeTarget = "F32" | "F16" | "Q4_0" | "Q5_0" | "Q8_0";

/** llama_ftype written to `general.file_type` per target (spec gguf.md §5). */
export const QUANTIZE_FTYPES: Readonly<Record<QuantizeTarget, number>> = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q8_0: 7,
  Q5_0: 8,
};

const TARGET_TYPES: Readonly<Record<QuantizeTarget, GgmlType>> = {
  F32: GgmlType.F32,
  F16: GgmlType.F16,
  Q4_0: GgmlType.Q4_0,
  Q8_0: GgmlType.Q8_0,
  Q5_0: GgmlType.Q5_0,
};

/** Source types a quantized tensor can be read from with `allowRequantize`. */
const REQUANTIZABLE: ReadonlySet<GgmlType> = new Set([
  GgmlType.Q4_0,
  GgmlType.Q5_0,
  GgmlType.Q8_0,
  GgmlType.Q6_K,
]);

/** `general.quantization_version` written by quantize. */
export const QUANTIZATION_VERSION = 2;

/**
 * Parses a target type given by name (case-insensitive) or llama_ftype number, as PowerInfer's
 * `quantize` accepts them (spec cli.md §3), restricted to the targets supported here.
 *
 * @param text E.g. `"q4_0"`, `"Q8_0"`, `"F16"`, `"2"`.
 * @returns The target.
 * @throws {QuantizeError} If the name is unknown or a type this tool does not write.
 *
 * @example Names and numbers
 * ```ts
 * import { equal, throws } from "node:assert/strict";
 * import { parseQuantizeTarget } from "./quantize_model.ts";
 * equal(parseQuantizeTarget("q4_0"), "Q4_0");
 * equal(parseQuantizeTarget("7"), "Q8_0");
 * throws(() => parseQuantizeTarget("Q3_K"));
 * ```
 */
export function parseQuantizeTarget(text: string): QuantizeTarget {
  const upper = text.trim().toUpperCase();
  for (const [name, ftype] of Object.entries(QUANTIZE_FTYPES)) {
    if (upper === name || upper === String(ftype)) return name as QuantizeTarget;
  }
  const known = "Q4_0 (2), Q5_0 (8), Q8_0 (7), F16 (1), F32 (0)";
  const kquant = /^(Q[2-6]_K(_[SML])?|Q4_1|Q5_1|COPY|1[0-8]|3|9)$/.test(upper);
  throw new QuantizeError(
    kquant
      ? `Quantization type "${text}" is not supported by this tool: expected one of ${known}`
      : `Unknown quantization type "${text}": expected one of ${known}`,
  );
}

/** How a `quantizeModel` call decides and computes. */
export interface QuantizePlanOptions {
  /** Quantize every 2-D weight to exactly the target (no output/predictor rules). */
  pure?: boolean;
  /** Keep `output.weight` as it is. */
  leaveOutputTensor?: boolean;
  /** Accept already-quantized sources (Q4_0, Q5_0, Q8_0, Q6_K), dequantizing them first. */
  allowRequantize?: boolean;
}

/** What happens to one tensor. */
export interface QuantizePlanEntry {
  readonly name: string;
  readonly ne: readonly number[];
  readonly srcType: GgmlType;
  readonly dstType: GgmlType;
  /** "copy": bytes unchanged; "quantize": from F32/F16; "requantize": from a quantized type. */
  readonly action: "copy" | "quantize" | "requantize";
}

/**
 * The type PowerInfer's `quantize` (non-pure) gives a 2-D weight it quantizes (spec q4_0.md §5):
 * `output.weight` becomes Q6_K, or Q8_0 for Falcon, when its row length is not a multiple of 256
 * or when the target is Q8_0; predictor `fc1`/`fc2` become Q4_0 for a Q4_0 target and Q5_0
 * otherwise; everything else becomes the target.
 */
function chooseType(name: string, ne: readonly number[], arch: string, target: GgmlType): GgmlType {
  if (name === "output.weight") {
    if (arch === "falcon" || ne[0]! % 256 !== 0) return GgmlType.Q8_0;
    return target === GgmlType.Q8_0 ? GgmlType.Q8_0 : GgmlType.Q6_K;
  }
  if (name.endsWith("fc1.weight") || name.endsWith("fc2.weight")) {
    return target === GgmlType.Q4_0 ? GgmlType.Q4_0 : GgmlType.Q5_0;
  }
  return target;
}

/**
 * Decides, for every tensor in file order, its output type and how it is produced; checks
 * every refusal before anything is written.
 *
 * @param tensors The input's tensor infos, in file order.
 * @param arch The input's `general.architecture`.
 * @param target Target type.
 * @param options `pure`, `leaveOutputTensor`, `allowRequantize`.
 * @returns One entry per tensor, in order.
 * @throws {QuantizeError} If a source cannot be requantized, or a row length is not a multiple
 * of the chosen type's block size (naming the tensor).
 *
 * @example A LLaMA PWRI model to Q4_0
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * import { GgmlType } from "../gguf/types.ts";
 * import { planQuantization } from "./quantize_model.ts";
 * const t = (name: string, ne: number[]) => ({ name, type: GgmlType.F16, ne, offsetBytes: 0, byteLength: 0 });
 * const plan = planQuantization(
 *   [t("token_embd.weight", [256, 100]), t("output.weight", [256, 100]), t("blk.0.fc1.weight", [256, 32]),
 *    { name: "output_norm.weight", type: GgmlType.F32, ne: [256], offsetBytes: 0, byteLength: 0 }],
 *   "llama",
 *   "Q4_0",
 * );
 * deepEqual(plan.map((e) => e.dstType), [GgmlType.Q4_0, GgmlType.Q6_K, GgmlType.Q4_0, GgmlType.F32]);
 * ```
 */
export function planQuantization(
  tensors: readonly GgufTensorInfo[],
  arch: string,
  target: QuantizeTarget,
  options: QuantizePlanOptions = {},
): QuantizePlanEntry[] {
  const targetType = TARGET_TYPES[target];
  return tensors.map((t) => {
    const quantized = t.name.endsWith("weight") && t.ne.length === 2 &&
      !(options.leaveOutputTensor && t.name === "output.weight");
    const dstType = !quantized
      ? t.type
      : options.pure
      ? targetType
      : chooseType(t.name, t.ne, arch, targetType);
    const base = { name: t.name, ne: [...t.ne], srcType: t.type, dstType };
    if (dstType === t.type) return { ...base, action: "copy" };
    const info = `tensor "${t.name}" [${t.ne.join(", ")}]`;
    if (t.type !== GgmlType.F32 && t.type !== GgmlType.F16) {
      if (!options.allowRequantize) {
        throw new QuantizeError(
          `Cannot quantize ${info} from ${ggmlTypeName(t.type)} to ${
            ggmlTypeName(dstType)
          }: the input is already quantized (pass --allow-requantize to dequantize it first)`,
        );
      }
      if (!REQUANTIZABLE.has(t.type)) {
        throw new QuantizeError(
          `Cannot requantize ${info}: source type ${
            ggmlTypeName(t.type)
          } cannot be dequantized here (expected F32, F16, Q4_0, Q5_0, Q8_0 or Q6_K)`,
        );
      }
    }
    const blockSize = dstType === GgmlType.Q6_K
      ? 256
      : dstType === GgmlType.F32 || dstType === GgmlType.F16
      ? 1
      : 32;
    if (t.ne[0]! % blockSize !== 0) {
      throw new QuantizeError(
        `Cannot quantize ${info} to ${ggmlTypeName(dstType)}: its row length ${
          t.ne[0]
        } is not a multiple of the block size ${blockSize}`,
      );
    }
    return {
      ...base,
      action: t.type === GgmlType.F32 || t.type === GgmlType.F16 ? "quantize" : "requantize",
    };
  });
}

/**
 * The output metadata: the input's KV pairs in order, then `general.quantization_version` and
 * `general.file_type` set (in place when present, else appended), as ggml's quantize does.
 *
 * @param metadata Input KV pairs in file order.
 * @param target Target type (its llama_ftype goes to `general.file_type`).
 * @returns The output KV pairs.
 *
 * @example Keys are updated in place or appended in order
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * import { GgufValueType } from "../gguf/types.ts";
 * import { quantizedMetadata } from "./quantize_model.ts";
 * const out = quantizedMetadata([
 *   { key: "general.architecture", type: GgufValueType.STRING, value: "llama" },
 *   { key: "general.file_type", type: GgufValueType.UINT32, value: 1 },
 * ], "Q4_0");
 * deepEqual(out.map((kv) => [kv.key, kv.value]), [
 *   ["general.architecture", "llama"], ["general.file_type", 2], ["general.quantization_version", 2],
 * ]);
 * ```
 */
export function quantizedMetadata(metadata: Iterable<GgufKv>, target: QuantizeTarget): GgufKv[] {
  const out = [...metadata];
  const set = (key: string, value: number) => {
    const kv: GgufKv = { key, type: GgufValueType.UINT32, value };
    const i = out.findIndex((e) => e.key === key);
    if (i >= 0) out[i] = kv;
    else out.push(kv);
  };
  set("general.quantization_version", QUANTIZATION_VERSION);
  set("general.file_type", QUANTIZE_FTYPES[target]);
  return out;
}

/** Progress of `quantizeModel`, reported when a tensor starts and when it is written. */
export interface QuantizeProgress {
  readonly phase: "start" | "done";
  /** 0-based index of the tensor this event is about. */
  readonly index: number;
  readonly nTensors: number;
  readonly entry: QuantizePlanEntry;
  /** Input tensor bytes finished so far (excluding this tensor on "start"). */
  readonly inputBytesDone: number;
  readonly inputBytesTotal: number;
  /** Output file bytes written so far. */
  readonly outputBytesDone: number;
  readonly outputBytesTotal: number;
  readonly elapsedMs: number;
}

/** Options of {@linkcode quantizeModel}. */
export interface QuantizeModelOptions extends QuantizePlanOptions {
  /** Kernel threads (0 or absent: the library default, physical cores). */
  threads?: number;
  /**
   * "native" (default): the kernel library; "ref": the scalar TypeScript references (slow;
   * for tests and machines without the library). Both give the same bytes.
   */
  backend?: "native" | "ref";
  /** Q4_0/Q5_0 `x·id + 8.5` as one FMA like PowerInfer's x86 binaries (default true). */
  fused?: boolean;
  onProgress?: (progress: QuantizeProgress) => void;
  /**
   * How the native path reads the input: "auto" (default) takes "mmap" when at least 90% of the
   * tensor data is in the page cache and "buffered" otherwise. "buffered": plain pread()s of
   * 8 MiB chunks on worker threads, seven chunks ahead of the kernels, so the disk always has
   * several reads queued (from a cold cache 1.3-1.8x faster than the mapping on the 2-core test
   * VM); "mmap": the mapping, paged in on demand (no copy: faster when the file is cached);
   * "direct": the same reads as "buffered" with O_DIRECT (no page cache, but slower here).
   */
  inputIo?: "auto" | "mmap" | "direct" | "buffered";
  /** Aborting stops before the next tensor; no output file is left behind. */
  signal?: AbortSignal;
}

/** What `quantizeModel` did. */
export interface QuantizeSummary {
  readonly inputPath: string;
  readonly outputPath: string;
  readonly target: QuantizeTarget;
  readonly inputBytes: number;
  readonly outputBytes: number;
  readonly seconds: number;
  readonly plan: readonly QuantizePlanEntry[];
}

function sameFile(a: Deno.FileInfo, b: Deno.FileInfo): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.ino !== null;
}

/** Refuses an output path that is (or links to) the input. */
function checkPaths(inputPath: string, outputPath: string): void {
  checkInputFile(inputPath, "input");
  const input = Deno.statSync(inputPath);
  let output: Deno.FileInfo | undefined;
  try {
    output = Deno.statSync(outputPath);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  let realIn = resolve(inputPath);
  let realOut = resolve(outputPath);
  try {
    realIn = Deno.realPathSync(inputPath);
    realOut = output
      ? Deno.realPathSync(outputPath)
      : join(Deno.realPathSync(dirname(resolve(outputPath))), basename(outputPath));
  } catch {
    // a missing output directory is reported by checkOutputPath below
  }
  if (realIn === realOut || (output && sameFile(input, output))) {
    throw new QuantizeError(
      `Output path "${outputPath}" is the input file "${inputPath}": choose another output path`,
    );
  }
  checkOutputPath(outputPath);
}

/**
 * Quantizes a GGUF/PWRI model file like PowerInfer's `quantize`: PWRI stays PWRI, version 3,
 * metadata carried over in order with `general.file_type` and `general.quantization_version`
 * set, tensor order and names kept, 2-D weights converted per {@linkcode planQuantization}, the
 * rest copied. Writes a temporary file beside `outputPath` and renames it at the end; on any
 * failure (including a full disk or an abort) no output file is left.
 *
 * @param inputPath Model to read (mapped, never loaded whole).
 * @param outputPath File to write; must not be the input (also through links).
 * @param target Target type.
 * @param options Plan options, threads, backend, progress callback, abort signal.
 * @returns Sizes, time and the plan.
 * @throws {QuantizeError} On every refusal (bad paths, a GPU-index input, requantizing, row
 * lengths) and when the output cannot be written.
 *
 * @example Quantize a model to Q4_0
 * ```ts ignore
 * import { quantizeModel } from "./quantize_model.ts";
 * const summary = await quantizeModel("model.f16.gguf", "model.q4_0.gguf", "Q4_0");
 * console.log(summary.outputBytes);
 * ```
 */
export async function quantizeModel(
  inputPath: string,
  outputPath: string,
  target: QuantizeTarget,
  options: QuantizeModelOptions = {},
): Promise<QuantizeSummary> {
  const t0 = performance.now();
  try {
    checkPaths(inputPath, outputPath);
  } catch (error) {
    if (error instanceof QuantizeError) throw error;
    if (error instanceof PowerInferError) throw new QuantizeError(error.message, { cause: error });
    throw new QuantizeError(`Cannot read input "${inputPath}": ${(error as Error).message}`, {
      cause: error,
    });
  }
  const ops = options.backend === "ref" ? undefined : native;
  let threadsBefore: number | undefined;
  if (ops) {
    try {
      threadsBefore = ops.getThreads();
      if (options.threads !== undefined) ops.setThreads(options.threads);
    } catch (cause) {
      throw new QuantizeError(`Cannot use the native kernels: ${(cause as Error).message}`, {
        cause,
      });
    }
  }
  let file: GgufFile;
  try {
    file = openGguf(inputPath);
  } catch (cause) {
    if (threadsBefore !== undefined) ops?.setThreads(threadsBefore);
    throw new QuantizeError(`Cannot open input "${inputPath}": ${(cause as Error).message}`, {
      cause,
    });
  }
  try {
    if (file.kind === "powerinfer-gpu-index") {
      throw new QuantizeError(`Input "${inputPath}" is a GPU-index file, not a model`);
    }
    const arch = file.getString("general.architecture") ?? "";
    const plan = planQuantization(file.tensors, arch, target, options);
    const fused = options.fused ?? true;
    const inputBytesTotal = file.tensors.reduce((s, t) => s + t.byteLength, 0);
    let inputBytesDone = 0;
    let outputBytesDone = 0;
    let outputBytesTotal = 0;
    const report = (phase: "start" | "done", index: number) =>
      options.onProgress?.({
        phase,
        index,
        nTensors: plan.length,
        entry: plan[index]!,
        inputBytesDone,
        inputBytesTotal,
        outputBytesDone,
        outputBytesTotal,
        elapsedMs: performance.now() - t0,
      });

    const spec: GgufWriteSpec = {
      magic: file.magic,
      version: 3,
      metadata: quantizedMetadata(file.metadata.values(), target),
      tensors: plan.map((entry) => ({
        name: entry.name,
        type: entry.dstType,
        ne: [...entry.ne],
        data: () => new Uint8Array(0), // the writers below produce the data
      })),
    };
    // Laid out on first use: the native writer starts reading the input first (the header
    // of a model with a large vocabulary takes tens of milliseconds to serialize).
    let layout: GgufLayout | undefined;
    const getLayout = () => {
      layout ??= layoutGguf(spec);
      outputBytesTotal = layout.totalBytes;
      return layout;
    };
    const onTensor = (index: number, bytesDone: number) => {
      inputBytesDone += file.tensors[index]!.byteLength;
      outputBytesDone = bytesDone;
      report("done", index);
    };
    const run = {
      file,
      plan,
      layout: getLayout,
      fused,
      signal: options.signal,
      report,
      onTensor,
      inputPath,
      inputIo: chooseInputIo(file, options.inputIo ?? "auto", ops !== undefined),
    };
    try {
      if (ops) await writeNative(outputPath, run);
      else await writeReference(outputPath, spec, run);
    } catch (error) {
      if (error instanceof QuantizeError) throw error;
      if (options.signal?.aborted && error === options.signal.reason) {
        throw new QuantizeError(`Quantization of "${inputPath}" was aborted; no output written`, {
          cause: error,
        });
      }
      if (error instanceof FileWriteError) {
        throw new QuantizeError(error.message, { cause: error });
      }
      throw new QuantizeError(
        `Cannot write "${outputPath}": ${(error as Error).message}; no output written`,
        { cause: error },
      );
    }
    return {
      inputPath,
      outputPath,
      target,
      inputBytes: file.byteLength,
      outputBytes: getLayout().totalBytes,
      seconds: (performance.now() - t0) / 1000,
      plan,
    };
  } finally {
    file.close();
    if (threadsBefore !== undefined && options.threads !== undefined) {
      ops?.setThreads(threadsBefore);
    }
  }
}

/** Resolves `inputIo: "auto"`: the mapping when the tensor data is (nearly) all cached. */
function chooseInputIo(
  file: GgufFile,
  io: "auto" | "mmap" | "direct" | "buffered",
  hasNative: boolean,
): "mmap" | "direct" | "buffered" {
  if (io !== "auto") return io;
  if (!hasNative || file.tensors.length === 0) return "mmap";
  const first = file.tensorData(file.tensors[0]!);
  const dataBytes = file.byteLength - file.dataOffset;
  const start = first.byteOffset - file.tensors[0]!.offsetBytes; // the data section
  const data = new Uint8Array(
    first.buffer,
    start,
    Math.min(dataBytes, first.buffer.byteLength - start),
  );
  return native.mmapResidentBytes(data) >= 0.9 * dataBytes ? "mmap" : "buffered";
}

/** What the file writers of `quantizeModel` work from. */
interface WriteRun {
  file: GgufFile;
  plan: readonly QuantizePlanEntry[];
  /** The output's layout (computed on the first call). */
  layout: () => GgufLayout;
  fused: boolean;
  signal?: AbortSignal;
  report: (phase: "start" | "done", index: number) => void;
  inputPath: string;
  inputIo: "mmap" | "direct" | "buffered";
  onTensor: (index: number, outputBytesDone: number) => void;
}

/** Without the native library: the TS references, one tensor at a time through writeGguf. */
async function writeReference(path: string, spec: GgufWriteSpec, run: WriteRun): Promise<void> {
  const { file, plan, fused } = run;
  await writeGguf(path, {
    ...spec,
    tensors: spec.tensors.map((t, i) => ({
      ...t,
      data: () => {
        run.signal?.throwIfAborted();
        run.report("start", i);
        const entry = plan[i]!;
        const src = file.tensorData(file.tensors[i]!);
        if (entry.action === "copy") return src;
        return quantize(entry.dstType, dequantize(entry.srcType, src), { fused });
      },
    })),
  }, { onProgress: (done, _n, bytesDone) => run.onTensor(done - 1, bytesDone) });
}

/** Bytes of one staging buffer of the native writer. */
const STAGE_BYTES = 32 << 20;
/** O_DIRECT granularity: buffer addresses, lengths and file offsets. */
const DIRECT_ALIGN = 4096;

/**
 * The native writer. The output streams through two 4 KiB-aligned staging buffers: the kernels
 * quantize rows straight from the mapped input into a buffer (threaded), and while they fill
 * one, the other is written to the file on a worker thread with O_DIRECT (no page-cache copy).
 * A temporary file beside `path` is fdatasync()ed once at the end and renamed into place; on
 * any failure it is removed.
 */
async function writeNative(path: string, run: WriteRun): Promise<void> {
  const { file, plan, fused } = run;
  // Reads first: the disk works while the output is laid out and created.
  const side = startSideJobs(run);
  const source = new InputSource(file, plan, run.inputPath, run.inputIo, new Set(side.keys()));
  source.start();
  const tmp = tempPathBeside(path);
  let layout: GgufLayout;
  let fd: number;
  try {
    layout = run.layout();
    try {
      fd = native.fileCreate(tmp, true);
    } catch (error) {
      throw fileWriteError(path, error);
    }
  } catch (error) {
    // The side jobs read the mapping: they finish before it can be closed.
    for (const job of side.values()) await job.catch(() => {});
    await source.close();
    throw error;
  }
  const stages = [native.alignedBuffer(STAGE_BYTES), native.alignedBuffer(STAGE_BYTES)];
  let stage = stages[0]!;
  let pos = 0; // bytes filled in `stage`
  let fileOffset = 0; // file offset of stage[0]
  let inFlight: Promise<void> | undefined;
  const waitWrite = async () => {
    const w = inFlight;
    inFlight = undefined;
    if (w) {
      try {
        await w;
      } catch (error) {
        throw fileWriteError(path, error);
      }
    }
  };
  // Writes the whole 4 KiB blocks of `stage` (all of it, zero-padded, at the end) and moves
  // the partial block to the front of the other buffer.
  const flush = async (final: boolean) => {
    const n = final ? alignUp(pos, DIRECT_ALIGN) : pos - (pos % DIRECT_ALIGN);
    if (final) stage.fill(0, pos, n);
    await waitWrite(); // the other buffer is free again
    const other = stages[stage === stages[0] ? 1 : 0]!;
    const tail = final ? 0 : pos - n;
    other.set(stage.subarray(n, n + tail), 0);
    if (n > 0) {
      inFlight = native.filePwriteAsync(fd, stage.subarray(0, n), fileOffset);
      inFlight.catch(() => {}); // awaited by waitWrite
    }
    fileOffset += n;
    stage = other;
    pos = tail;
    if (final) await waitWrite();
  };
  const put = async (bytes: Uint8Array) => {
    for (let at = 0; at < bytes.byteLength;) {
      const n = Math.min(bytes.byteLength - at, STAGE_BYTES - pos);
      stage.set(bytes.subarray(at, at + n), pos);
      pos += n;
      at += n;
      if (pos === STAGE_BYTES) await flush(false);
    }
  };
  const zeros = new Uint8Array(layout.alignment);
  let ok = false;
  try {
    await put(layout.header);
    for (let i = 0; i < plan.length; i++) {
      run.signal?.throwIfAborted();
      run.report("start", i);
      const entry = plan[i]!;
      const { byteLength } = layout.tensors[i]!;
      const sideJob = side.get(i);
      if (sideJob) {
        for (let c = source.chunkCount(i); c > 0; c--) await source.next(); // views, never read
        await put(await sideJob);
        side.delete(i); // its buffer can go
      } else if (entry.action === "copy") {
        for (let c = source.chunkCount(i); c > 0; c--) await put(await source.next());
      } else {
        const nCols = entry.ne[0]!;
        const rowBytes = native.rowByteLength(entry.dstType, nCols);
        let inputType = entry.srcType;
        if (entry.action === "requantize") inputType = GgmlType.F32;
        const srcRowBytes = nCols * (inputType === GgmlType.F32 ? 4 : 2);
        for (let c = source.chunkCount(i); c > 0; c--) {
          let inputBytes = await source.next();
          if (entry.action === "requantize") {
            const nRowsAll = inputBytes.byteLength / native.rowByteLength(entry.srcType, nCols);
            const f32 = new Float32Array(nRowsAll * nCols);
            native.dequantizeRows(f32, inputBytes, entry.srcType, nRowsAll, nCols);
            inputBytes = new Uint8Array(f32.buffer);
          }
          const nRows = inputBytes.byteLength / srcRowBytes;
          for (let r = 0; r < nRows;) {
            let k = Math.min(nRows - r, Math.floor((STAGE_BYTES - pos) / rowBytes));
            if (k === 0 && pos > 0) {
              await flush(false);
              continue;
            }
            let out: Uint8Array;
            let staged = true;
            if (k === 0) { // one row larger than a whole stage
              k = 1;
              out = new Uint8Array(rowBytes);
              staged = false;
            } else {
              out = stage.subarray(pos, pos + k * rowBytes);
            }
            await native.quantizeRowsAsync(
              out,
              entry.dstType,
              inputBytes.subarray(r * srcRowBytes, (r + k) * srcRowBytes),
              inputType,
              k,
              nCols,
              { fused },
            );
            if (staged) {
              pos += k * rowBytes;
              if (pos === STAGE_BYTES) await flush(false);
            } else {
              await put(out);
            }
            r += k;
          }
        }
      }
      const pad = alignUp(byteLength, layout.alignment) - byteLength;
      if (pad > 0) await put(zeros.subarray(0, pad));
      run.onTensor(i, fileOffset + pos);
    }
    await flush(true);
    const size = layout.totalBytes;
    try {
      native.fileClose(fd, size, true);
    } catch (error) {
      fd = -1;
      throw fileWriteError(path, error);
    }
    fd = -1;
    try {
      Deno.renameSync(tmp, path);
    } catch (error) {
      throw fileWriteError(path, error);
    }
    ok = true;
  } finally {
    // Side jobs read the mapping and fill their buffers: they finish before either goes away.
    for (const job of side.values()) await job.catch(() => {});
    await source.close();
    if (!ok) {
      // A write still in flight reads a stage buffer and the descriptor: let it finish first.
      await inFlight?.catch(() => {});
      if (fd >= 0) {
        try {
          native.fileClose(fd, -1, false);
        } catch { /* already failing */ }
      }
      try {
        Deno.removeSync(tmp);
      } catch { /* never created or already gone */ }
    }
  }
}

/** Output bytes of a tensor computed beside the stream at most (held in memory until written). */
const SIDE_MAX_BYTES = 1 << 30;

/**
 * Starts the side jobs of the native writer: tensors whose quantization is much slower than
 * reading them (Q6_K: its scale search costs ~10x Q4_0's CPU; in PowerInfer's plan that is
 * `output.weight`) are quantized into their own buffer from the start, on one worker thread
 * outside the kernel pool, one after the other. Alone, such a tensor leaves the disk idle while
 * the CPU works, and the Q4_0 tensors leave the CPU waiting for the disk; side by side, each
 * fills the other's gaps. The stream writes a side tensor's buffer when it reaches its place,
 * so the file's bytes and order are unchanged.
 */
function startSideJobs(run: WriteRun): Map<number, Promise<Uint8Array>> {
  const jobs = new Map<number, Promise<Uint8Array>>();
  let chain: Promise<unknown> = Promise.resolve();
  run.plan.forEach((entry, i) => {
    const byteLength = tensorByteSize(entry.dstType, entry.ne);
    if (entry.action !== "quantize" || entry.dstType !== GgmlType.Q6_K) return;
    if (byteLength > SIDE_MAX_BYTES) return;
    const nCols = entry.ne[0]!;
    const nRows = byteLength / native.rowByteLength(entry.dstType, nCols);
    const src = run.file.tensorData(run.file.tensors[i]!);
    const job = chain.then(async () => {
      const out = new Uint8Array(byteLength);
      await native.quantizeRowsAsync(out, entry.dstType, src, entry.srcType, nRows, nCols, {
        fused: run.fused,
        serial: true,
      });
      return out;
    });
    job.catch(() => {}); // awaited by the stream (or its cleanup)
    chain = job.catch(() => {});
    jobs.set(i, job);
  });
  return jobs;
}

/** Bytes of input per chunk (whole rows; at least one row). */
const INPUT_CHUNK_BYTES = 8 << 20;
/** Input buffers of the pread() source: the chunk in use and up to seven reads in flight. */
const INPUT_BUFFERS = 8;

/**
 * The input of the native writer as a list of chunks (tensor-relative byte ranges of whole rows)
 * served in order: views of the mapping, or pread()s (buffered, or O_DIRECT) into
 * INPUT_BUFFERS aligned buffers with the next chunks' reads in flight while the current one is
 * quantized. Several reads in flight keep the disk busy where the page-fault read-ahead of the
 * mapping (one window at a time, and none while the CPU works) leaves it idle. Tensors in
 * `skip` (computed by a side job from the mapping) are served as views, never read.
 */
class InputSource {
  readonly #file: GgufFile;
  readonly #chunks: { index: number; start: number; end: number; mapped: boolean }[] = [];
  readonly #byTensor: number[] = [];
  #fd = -1;
  #buffers: Uint8Array[] = [];
  #next = 0;
  readonly #ahead = new Map<number, Promise<Uint8Array>>();

  constructor(
    file: GgufFile,
    plan: readonly QuantizePlanEntry[],
    path: string,
    io: "mmap" | "direct" | "buffered",
    skip: ReadonlySet<number> = new Set(),
  ) {
    this.#file = file;
    const reads = io !== "mmap";
    for (let i = 0; i < plan.length; i++) {
      const entry = plan[i]!;
      const byteLength = file.tensors[i]!.byteLength;
      // Requantized tensors are read whole from the mapping (their rows are dequantized first).
      const unit = entry.action === "copy" ? 1 : native.rowByteLength(entry.srcType, entry.ne[0]!);
      const step = entry.action === "requantize"
        ? Math.max(byteLength, 1)
        : Math.max(1, Math.floor(INPUT_CHUNK_BYTES / unit)) * unit;
      this.#byTensor.push(0);
      for (let start = 0; start < byteLength || start === 0; start += step) {
        const end = Math.min(start + step, byteLength);
        this.#chunks.push({
          index: i,
          start,
          end,
          mapped: !reads || entry.action === "requantize" || skip.has(i),
        });
        this.#byTensor[i]!++;
        if (end >= byteLength) break;
      }
    }
    if (reads) {
      this.#fd = native.fileOpenRead(path, io === "direct");
      const size = INPUT_CHUNK_BYTES + 2 * DIRECT_ALIGN;
      this.#buffers = Array.from({ length: INPUT_BUFFERS }, () => native.alignedBuffer(size));
    }
  }

  /** Starts the first reads (before the first next()). */
  start(): void {
    if (this.#next === 0 && this.#chunks.length > 0) this.#readAhead(-1);
  }

  /** Chunks of tensor `index`: call next() that many times for its bytes. */
  chunkCount(index: number): number {
    return this.#byTensor[index]!;
  }

  /** The next chunk's bytes; valid until the call after the next. */
  next(): Promise<Uint8Array> {
    const j = this.#next++;
    const bytes = this.#ahead.get(j) ?? this.#load(j);
    this.#ahead.delete(j);
    this.#readAhead(j);
    return bytes;
  }

  /** Starts the reads of the chunks after `j` that have a free buffer. */
  #readAhead(j: number): void {
    // The previous chunk is done with: its buffer takes the read INPUT_BUFFERS - 1 ahead.
    const last = Math.min(j + INPUT_BUFFERS - 1, this.#chunks.length - 1);
    for (let k = j + 1; k <= last; k++) {
      if (this.#ahead.has(k)) continue;
      const p = this.#load(k);
      p.catch(() => {}); // awaited by a later call
      this.#ahead.set(k, p);
    }
  }

  #load(j: number): Promise<Uint8Array> {
    const c = this.#chunks[j]!;
    const t = this.#file.tensors[c.index]!;
    if (c.mapped || c.end === c.start) {
      return Promise.resolve(this.#file.tensorData(t).subarray(c.start, c.end));
    }
    const at = this.#file.dataOffset + t.offsetBytes + c.start;
    const a0 = at - (at % DIRECT_ALIGN);
    const a1 = alignUp(at + c.end - c.start, DIRECT_ALIGN);
    const buffer = this.#buffers[j % INPUT_BUFFERS]!.subarray(0, a1 - a0);
    return native.filePreadAsync(this.#fd, buffer, a0).then(() =>
      buffer.subarray(at - a0, at - a0 + c.end - c.start)
    );
  }

  /** Waits for a read in flight and closes the descriptor. */
  async close(): Promise<void> {
    for (const p of this.#ahead.values()) await p.catch(() => {});
    this.#ahead.clear();
    if (this.#fd >= 0) native.fileClose(this.#fd, -1, false);
    this.#fd = -1;
  }
}
