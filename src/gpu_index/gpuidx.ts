/**
 * `.generated.gpuidx` files: which FFN neurons of each layer live on the GPU (spec:
 * shared/spec/gguf.md §7, gpu-index.md §4).
 *
 * Layout (what PowerInfer's `export_split.py` writes, and what we write): GGUF v3 with the PWRI
 * magic, alignment 32; metadata `general.architecture` = "generic.gpu_index",
 * `generic.gpu_index.block_count` (u32), `split.vram_capacity` (u64, the budget in bytes the
 * index was made for); tensors `blk.0.gpu_idx`, `blk.0.gpu_bucket`, `blk.1.gpu_idx`, ... all I32
 * and 1-D: `gpu_idx` [nFf] is 0/1 per neuron, `gpu_bucket` [k] lists the hot neuron ids ascending.
 * Like PowerInfer's loader, the reader takes the tensors by position (2i, 2i+1), not by name.
 *
 * @module
 */

import { GpuIndexError } from "../errors.ts";
import type { GgufFile } from "../gguf/reader.ts";
import { parseGguf, parseGgufSource } from "../gguf/reader.ts";
import { FileSource } from "../torch/source.ts";
import { GgmlType, type GgufKv, GgufValueType } from "../gguf/types.ts";
import { type GgufWriteSpec, layoutGguf, serializeGguf, writeGguf } from "../gguf/writer.ts";
import { writeFileAtomicSync } from "../gguf/output_file.ts";

/** Architecture string of GPU-index files. */
export const GPU_INDEX_ARCH = "generic.gpu_index";

/** Suffix PowerInfer appends to the model path for its index cache. */
export const GPU_INDEX_SUFFIX = ".generated.gpuidx";

/** Hot neurons of one layer. */
export interface GpuIndexLayer {
  /** [nFf]: 1 = hot (GPU), 0 = cold (CPU). */
  readonly gpuIdx: Uint8Array;
  /** [k]: hot neuron ids, ascending (GPU striped row i = neuron `gpuBucket[i]`). */
  readonly gpuBucket: Int32Array;
}

/** A whole GPU index. */
export interface GpuIndex {
  /** The VRAM budget in bytes the index was made for (`split.vram_capacity`). */
  readonly vramCapacity: number;
  readonly layers: readonly GpuIndexLayer[];
}

/**
 * Builds one layer from its hot neuron ids.
 *
 * @param nFf Neurons in the layer.
 * @param hot Hot neuron ids (any order; duplicates are an error).
 * @returns The layer with `gpuIdx` and a sorted `gpuBucket`.
 * @throws {GpuIndexError} If an id is out of range or repeated.
 *
 * @example Hot ids become a mask and a sorted bucket
 * ```ts
 * import { deepStrictEqual } from "node:assert/strict";
 * import { gpuIndexLayer } from "./gpuidx.ts";
 * const layer = gpuIndexLayer(4, [3, 0]);
 * deepStrictEqual([...layer.gpuIdx], [1, 0, 0, 1]);
 * deepStrictEqual([...layer.gpuBucket], [0, 3]);
 * ```
 */
export function gpuIndexLayer(nFf: number, hot: ArrayLike<number>): GpuIndexLayer {
  const gpuIdx = new Uint8Array(nFf);
  for (let i = 0; i < hot.length; i++) {
    const j = hot[i]!;
    if (!Number.isInteger(j) || j < 0 || j >= nFf) {
      throw new GpuIndexError(`Hot neuron ${j} out of range [0, ${nFf})`);
    }
    if (gpuIdx[j]) throw new GpuIndexError(`Hot neuron ${j} is listed twice`);
    gpuIdx[j] = 1;
  }
  return { gpuIdx, gpuBucket: bucketOf(gpuIdx) };
}

function bucketOf(gpuIdx: Uint8Array): Int32Array {
  let k = 0;
  for (let j = 0; j < gpuIdx.length; j++) k += gpuIdx[j]!;
  const bucket = new Int32Array(k);
  let w = 0;
  for (let j = 0; j < gpuIdx.length; j++) if (gpuIdx[j]) bucket[w++] = j;
  return bucket;
}

function i32Bytes(values: Int32Array): Uint8Array {
  // Little-endian hosts only (as everywhere in this toolkit).
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/**
 * The GGUF write spec of an index, in PowerInfer's exact key and tensor order.
 *
 * @param index The index to write.
 * @returns A spec for `writeGguf` / `serializeGguf`.
 */
export function gpuIndexSpec(index: GpuIndex): GgufWriteSpec {
  if (!Number.isSafeInteger(index.vramCapacity) || index.vramCapacity < 0) {
    throw new GpuIndexError(`Invalid VRAM capacity ${index.vramCapacity}: expected bytes >= 0`);
  }
  const metadata: GgufKv[] = [
    { key: "general.architecture", type: GgufValueType.STRING, value: GPU_INDEX_ARCH },
    {
      key: `${GPU_INDEX_ARCH}.block_count`,
      type: GgufValueType.UINT32,
      value: index.layers.length,
    },
    { key: "split.vram_capacity", type: GgufValueType.UINT64, value: BigInt(index.vramCapacity) },
  ];
  const tensors = index.layers.flatMap((layer, i) => [
    {
      name: `blk.${i}.gpu_idx`,
      type: GgmlType.I32,
      ne: [layer.gpuIdx.length],
      data: () => i32Bytes(Int32Array.from(layer.gpuIdx)),
    },
    {
      name: `blk.${i}.gpu_bucket`,
      type: GgmlType.I32,
      ne: [layer.gpuBucket.length],
      data: () => i32Bytes(Int32Array.from(layer.gpuBucket)),
    },
  ]);
  return { magic: "PWRI", version: 3, alignment: 32, metadata, tensors };
}

/**
 * Writes an index file (temporary file + rename).
 *
 * @param path Destination, usually `<model path>.generated.gpuidx`.
 * @param index The index.
 *
 * @example Write the index next to a model
 * ```ts ignore
 * import { gpuIndexLayer, gpuIndexPathFor, writeGpuIndex } from "./gpuidx.ts";
 * await writeGpuIndex(gpuIndexPathFor("model.gguf"), {
 *   vramCapacity: 2 ** 30,
 *   layers: [gpuIndexLayer(1024, [0, 1, 2])],
 * });
 * ```
 */
export async function writeGpuIndex(path: string, index: GpuIndex): Promise<void> {
  await writeGguf(path, gpuIndexSpec(index));
}

/**
 * Encodes an index file in memory.
 *
 * @param index The index.
 * @returns The file bytes.
 *
 * @example Round trip through bytes
 * ```ts
 * import { deepStrictEqual, strictEqual } from "node:assert/strict";
 * import { gpuIndexLayer, readGpuIndex, serializeGpuIndex } from "./gpuidx.ts";
 * const bytes = await serializeGpuIndex({ vramCapacity: 1 << 30, layers: [gpuIndexLayer(8, [5, 1])] });
 * const back = readGpuIndex(bytes);
 * strictEqual(back.vramCapacity, 1 << 30);
 * deepStrictEqual([...back.layers[0]!.gpuBucket], [1, 5]);
 * ```
 */
export function serializeGpuIndex(index: GpuIndex): Promise<Uint8Array> {
  return serializeGguf(gpuIndexSpec(index));
}

/**
 * Encodes an index file in memory, synchronously (index files are small). Same bytes as
 * {@link serializeGpuIndex}.
 *
 * @param index The index.
 * @returns The file bytes.
 */
export function serializeGpuIndexSync(index: GpuIndex): Uint8Array {
  const spec = gpuIndexSpec(index);
  const layout = layoutGguf(spec);
  const out = new Uint8Array(layout.totalBytes);
  out.set(layout.header, 0);
  spec.tensors.forEach((t, i) => {
    const data = t.data() as Uint8Array; // our providers are synchronous
    out.set(data, layout.dataOffset + layout.tensors[i]!.offsetBytes);
  });
  return out;
}

/**
 * Writes an index file synchronously (temporary file + rename, so a reader never sees half).
 *
 * @param path Destination.
 * @param index The index.
 */
export function writeGpuIndexSync(path: string, index: GpuIndex): void {
  writeFileAtomicSync(path, serializeGpuIndexSync(index));
}

/**
 * Reads an index (ours or PowerInfer's). Tensors are taken by position, as PowerInfer does:
 * tensor 2i is layer i's `gpu_idx`, tensor 2i+1 its `gpu_bucket`.
 *
 * @param source File bytes, an open `GgufFile`, or a path.
 * @returns The index; `gpuIdx` as 0/1 bytes.
 * @throws {GpuIndexError} If the file is not a consistent GPU index (odd tensor count, wrong
 * types, missing `split.vram_capacity`, values other than 0/1, a bucket that does not list exactly
 * the hot neurons in ascending order).
 * @throws {GgufFormatError} If the bytes are not GGUF.
 *
 * @example Read PowerInfer's or our index file
 * ```ts ignore
 * import { readGpuIndex } from "./gpuidx.ts";
 * const index = readGpuIndex("llama-7b-relu.powerinfer.gguf.generated.gpuidx");
 * console.log(index.layers.map((l) => l.gpuBucket.length));
 * ```
 */
export function readGpuIndex(source: Uint8Array | GgufFile | string): GpuIndex {
  if (typeof source === "string") {
    // Index files are small (4 bytes per neuron); a plain read needs no native library.
    return readGpuIndexFrom(parseGguf(Deno.readFileSync(source)), source);
  }
  if (source instanceof Uint8Array) return readGpuIndexFrom(parseGguf(source), "GPU index");
  return readGpuIndexFrom(source, "GPU index");
}

function readGpuIndexFrom(file: GgufFile, what: string): GpuIndex {
  const capacityKv = file.get("split.vram_capacity");
  if (!capacityKv) throw new GpuIndexError(`${what} has no split.vram_capacity key`);
  if (capacityKv.type !== GgufValueType.UINT64) {
    throw new GpuIndexError(
      `${what}: split.vram_capacity has type ${capacityKv.type}: expected 10 (UINT64)`,
    );
  }
  const vramCapacity = Number(capacityKv.value as bigint);
  const n = file.tensors.length;
  if (n % 2 !== 0) {
    throw new GpuIndexError(`${what} has ${n} tensors: expected 2 per layer (gpu_idx, gpu_bucket)`);
  }
  const layers: GpuIndexLayer[] = [];
  for (let i = 0; i < n / 2; i++) {
    const idxInfo = file.tensors[2 * i]!;
    const bucketInfo = file.tensors[2 * i + 1]!;
    for (const info of [idxInfo, bucketInfo]) {
      if (info.type !== GgmlType.I32 || info.ne.length !== 1) {
        throw new GpuIndexError(
          `${what}: tensor "${info.name}" (layer ${i}) has type ${info.type} and ${info.ne.length} dims: expected 1-D I32`,
        );
      }
    }
    const idx32 = readI32(file.tensorData(idxInfo));
    const bucket = readI32(file.tensorData(bucketInfo));
    const gpuIdx = new Uint8Array(idx32.length);
    let nHot = 0;
    for (let j = 0; j < idx32.length; j++) {
      const v = idx32[j]!;
      if (v !== 0 && v !== 1) {
        throw new GpuIndexError(`${what}: layer ${i} gpu_idx[${j}] = ${v}: expected 0 or 1`);
      }
      gpuIdx[j] = v;
      nHot += v;
    }
    if (bucket.length !== nHot) {
      throw new GpuIndexError(
        `${what}: layer ${i} gpu_bucket has ${bucket.length} entries: expected ${nHot} (the hot neurons of gpu_idx)`,
      );
    }
    for (let r = 0; r < bucket.length; r++) {
      const j = bucket[r]!;
      if (!(j >= 0 && j < gpuIdx.length && gpuIdx[j] === 1) || (r > 0 && j <= bucket[r - 1]!)) {
        throw new GpuIndexError(
          `${what}: layer ${i} gpu_bucket[${r}] = ${j}: expected ascending hot neuron ids`,
        );
      }
    }
    layers.push({ gpuIdx, gpuBucket: bucket });
  }
  return { vramCapacity, layers };
}

function readI32(bytes: Uint8Array): Int32Array {
  // Copy: the view may be unaligned or die with the file.
  const out = new Int32Array(bytes.length >>> 2);
  new Uint8Array(out.buffer).set(bytes.subarray(0, out.length * 4));
  return out;
}

/**
 * Refuses to write an index over an existing file that is not a GPU index (the model itself,
 * its statistics, anything else): only an earlier index may be replaced.
 *
 * @param path The output path.
 * @throws {GpuIndexError} If `path` exists and is not a readable PowerInfer GPU-index file.
 *
 * @example A new path is fine
 * ```ts
 * import { checkGpuIndexOutPath } from "./gpuidx.ts";
 * checkGpuIndexOutPath(`${Deno.makeTempDirSync()}/model.gguf.generated.gpuidx`);
 * ```
 */
export function checkGpuIndexOutPath(path: string): void {
  try {
    if (!Deno.statSync(path).isFile) return; // a directory: the writer says so
  } catch {
    return; // not there yet
  }
  let kind: string;
  try {
    const source = new FileSource(path);
    const file = parseGgufSource({
      byteLength: source.byteLength,
      view: (offsetBytes, length) => source.read(offsetBytes, length),
      close: () => source.close(),
    });
    kind = file.kind;
    file.close();
  } catch (cause) {
    throw new GpuIndexError(
      `Output "${path}" exists and is not a GPU index (${
        (cause as Error).message
      }): choose another --out`,
      { cause },
    );
  }
  if (kind !== "powerinfer-gpu-index") {
    throw new GpuIndexError(
      `Output "${path}" exists and is a ${kind} file, not a GPU index: choose another --out`,
    );
  }
}

/**
 * The index path PowerInfer (and we) use for a model: `<model path>.generated.gpuidx`.
 *
 * @param modelPath The model file.
 * @returns The index path beside it.
 *
 * @example
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { gpuIndexPathFor } from "./gpuidx.ts";
 * strictEqual(gpuIndexPathFor("m/a.gguf"), "m/a.gguf.generated.gpuidx");
 * ```
 */
export function gpuIndexPathFor(modelPath: string): string {
  return modelPath + GPU_INDEX_SUFFIX;
}
