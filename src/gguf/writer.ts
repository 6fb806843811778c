/**
 * Streaming GGUF / PowerInfer GGUF writer (spec: shared/spec/gguf.md §1–§2).
 *
 * Layout written, as gguf-py and ggml's quantize do: header, KV pairs, tensor infos, zero padding
 * up to `alignment`, then each tensor's bytes followed by zero padding to a multiple of
 * `alignment` (the last tensor too). Offsets are the running sum of padded sizes in tensor order.
 * A file with no tensors ends right after the KV section (no padding), like gguf-py's vocab files.
 * PWRI files are written with the PWRI magic directly (the converters patch bytes 0..3 afterwards;
 * the result is identical).
 *
 * @module
 */

import {
  alignUp,
  GGML_TYPES,
  type GgmlType,
  GGUF_DEFAULT_ALIGNMENT,
  type GgufKv,
  type GgufMagic,
  type GgufScalar,
  GgufValueType,
} from "./types.ts";
import { checkOutputPath, fileWriteError, tempPathBeside } from "./output_file.ts";

/** One tensor to write; `data` is called exactly once, in tensor order, when its turn comes. */
export interface GgufWriteTensor {
  name: string;
  type: GgmlType;
  /** Dims in ggml order (`ne[0]` contiguous), 1 to 4 entries. */
  ne: number[];
  /** Returns exactly the tensor's byte size (type × shape). */
  data: () => Uint8Array | Promise<Uint8Array>;
}

/** What to write. `magic` defaults to "GGUF", `version` to 3, `alignment` to 32. */
export interface GgufWriteSpec {
  magic?: GgufMagic;
  version?: number;
  /**
   * Data alignment. When not 32 and `metadata` has no `general.alignment`, that key (UINT32) is
   * appended so readers find it; when both are given they must agree.
   */
  alignment?: number;
  metadata: GgufKv[];
  tensors: GgufWriteTensor[];
}

/** Progress callback: tensors written so far, total tensors, bytes written, total file bytes. */
export type GgufWriteProgress = (
  done: number,
  total: number,
  bytesDone: number,
  bytesTotal: number,
) => void;

/** Where a writer sends its bytes. */
interface ByteSink {
  write(chunk: Uint8Array): Promise<void> | void;
}

const encoder = new TextEncoder();

/** Growable little-endian byte buffer for the header. */
class ByteBuilder {
  #buf = new Uint8Array(1 << 16);
  #dv = new DataView(this.#buf.buffer);
  length = 0;

  #reserve(n: number): void {
    if (this.length + n <= this.#buf.length) return;
    let cap = this.#buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.#buf.subarray(0, this.length));
    this.#buf = next;
    this.#dv = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.#reserve(1);
    this.#buf[this.length++] = v;
  }
  i8(v: number): void {
    this.#reserve(1);
    this.#dv.setInt8(this.length++, v);
  }
  u16(v: number): void {
    this.#reserve(2);
    this.#dv.setUint16(this.length, v, true);
    this.length += 2;
  }
  i16(v: number): void {
    this.#reserve(2);
    this.#dv.setInt16(this.length, v, true);
    this.length += 2;
  }
  u32(v: number): void {
    this.#reserve(4);
    this.#dv.setUint32(this.length, v, true);
    this.length += 4;
  }
  i32(v: number): void {
    this.#reserve(4);
    this.#dv.setInt32(this.length, v, true);
    this.length += 4;
  }
  f32(v: number): void {
    this.#reserve(4);
    this.#dv.setFloat32(this.length, v, true);
    this.length += 4;
  }
  f64(v: number): void {
    this.#reserve(8);
    this.#dv.setFloat64(this.length, v, true);
    this.length += 8;
  }
  u64(v: bigint): void {
    this.#reserve(8);
    this.#dv.setBigUint64(this.length, v, true);
    this.length += 8;
  }
  i64(v: bigint): void {
    this.#reserve(8);
    this.#dv.setBigInt64(this.length, v, true);
    this.length += 8;
  }
  /** A u64 from a safe non-negative integer. */
  size(v: number): void {
    this.#reserve(8);
    this.#dv.setUint32(this.length, v % 4294967296, true);
    this.#dv.setUint32(this.length + 4, Math.floor(v / 4294967296), true);
    this.length += 8;
  }
  string(s: string): void {
    // Reserve the worst case (3 bytes per UTF-16 unit), write, then patch the length prefix.
    this.#reserve(8 + s.length * 3);
    const { written } = encoder.encodeInto(s, this.#buf.subarray(this.length + 8));
    this.size(written);
    this.length += written;
  }
  zeros(n: number): void {
    this.#reserve(n);
    this.#buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(): Uint8Array {
    return this.#buf.subarray(0, this.length);
  }
}

function checkInt(v: GgufScalar, lo: number, hi: number, what: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) {
    throw new RangeError(`Bad value of ${what}: expected an integer in ${lo}..${hi}, found ${v}`);
  }
  return v;
}

function checkBig(v: GgufScalar, lo: bigint, hi: bigint, what: string): bigint {
  let b: bigint;
  if (typeof v === "bigint") b = v;
  else if (typeof v === "number" && Number.isSafeInteger(v)) b = BigInt(v);
  else throw new TypeError(`Bad value of ${what}: expected a bigint or safe integer, found ${v}`);
  if (b < lo || b > hi) {
    throw new RangeError(`Bad value of ${what}: expected ${lo}..${hi}, found ${b}`);
  }
  return b;
}

function writeScalar(out: ByteBuilder, type: GgufValueType, v: GgufScalar, what: string): void {
  switch (type) {
    case GgufValueType.UINT8:
      return out.u8(checkInt(v, 0, 0xff, what));
    case GgufValueType.INT8:
      return out.i8(checkInt(v, -0x80, 0x7f, what));
    case GgufValueType.UINT16:
      return out.u16(checkInt(v, 0, 0xffff, what));
    case GgufValueType.INT16:
      return out.i16(checkInt(v, -0x8000, 0x7fff, what));
    case GgufValueType.UINT32:
      return out.u32(checkInt(v, 0, 0xffffffff, what));
    case GgufValueType.INT32:
      return out.i32(checkInt(v, -0x80000000, 0x7fffffff, what));
    case GgufValueType.FLOAT32:
    case GgufValueType.FLOAT64:
      if (typeof v !== "number") {
        throw new TypeError(`Bad value of ${what}: expected a number, found ${typeof v}`);
      }
      return type === GgufValueType.FLOAT32 ? out.f32(v) : out.f64(v);
    case GgufValueType.BOOL:
      if (typeof v !== "boolean") {
        throw new TypeError(`Bad value of ${what}: expected a boolean, found ${typeof v}`);
      }
      return out.u8(v ? 1 : 0);
    case GgufValueType.STRING:
      if (typeof v !== "string") {
        throw new TypeError(`Bad value of ${what}: expected a string, found ${typeof v}`);
      }
      return out.string(v);
    case GgufValueType.UINT64:
      return out.u64(checkBig(v, 0n, 0xffffffffffffffffn, what));
    case GgufValueType.INT64:
      return out.i64(checkBig(v, -0x8000000000000000n, 0x7fffffffffffffffn, what));
    default:
      throw new RangeError(`Bad value type ${type} of ${what}: expected a scalar type 0..12`);
  }
}

/** The encoded header (padded to the data section when there are tensors) and the data layout. */
export interface GgufLayout {
  /** Magic, version, counts, KVs, tensor infos and padding: the first `dataOffset` bytes. */
  header: Uint8Array;
  alignment: number;
  dataOffset: number;
  /** Per tensor, in spec order: data-section offset and unpadded byte size. */
  tensors: { offsetBytes: number; byteLength: number }[];
  /** Size of the whole file. */
  totalBytes: number;
}

/**
 * Validates `spec` and encodes everything but the tensor payloads.
 *
 * @param spec What to write.
 * @returns The header bytes and where each tensor goes.
 * @throws {RangeError | TypeError} If a key, value, tensor name, type or shape is invalid.
 */
export function layoutGguf(spec: GgufWriteSpec): GgufLayout {
  const magic = spec.magic ?? "GGUF";
  if (magic !== "GGUF" && magic !== "PWRI") {
    throw new RangeError(`Bad magic ${magic}: expected "GGUF" or "PWRI"`);
  }
  const version = spec.version ?? 3;
  if (version !== 2 && version !== 3) {
    throw new RangeError(`Unsupported GGUF version ${version}: expected 2 or 3`);
  }
  const metadata = [...spec.metadata];
  const alignKv = metadata.find((kv) => kv.key === "general.alignment");
  if (alignKv && (alignKv.type !== GgufValueType.UINT32 || typeof alignKv.value !== "number")) {
    throw new TypeError(`Bad general.alignment: expected type UINT32`);
  }
  const alignment = spec.alignment ?? (alignKv?.value as number | undefined) ??
    GGUF_DEFAULT_ALIGNMENT;
  if (
    !Number.isInteger(alignment) || alignment <= 0 || alignment > 0x80000000 ||
    (alignment & (alignment - 1)) !== 0
  ) {
    throw new RangeError(`Bad alignment ${alignment}: expected a power of two`);
  }
  if (alignKv && alignKv.value !== alignment) {
    throw new RangeError(
      `Alignment ${alignment} disagrees with general.alignment ${alignKv.value}`,
    );
  }
  if (!alignKv && alignment !== GGUF_DEFAULT_ALIGNMENT) {
    metadata.push({ key: "general.alignment", type: GgufValueType.UINT32, value: alignment });
  }

  const out = new ByteBuilder();
  const m = magic === "GGUF" ? [0x47, 0x47, 0x55, 0x46] : [0x50, 0x57, 0x52, 0x49];
  for (const b of m) out.u8(b);
  out.u32(version);
  out.size(spec.tensors.length);
  out.size(metadata.length);

  const keys = new Set<string>();
  for (const kv of metadata) {
    if (typeof kv.key !== "string") throw new TypeError(`Bad metadata key ${kv.key}`);
    if (keys.has(kv.key)) throw new RangeError(`Duplicate metadata key "${kv.key}"`);
    keys.add(kv.key);
    const what = `key "${kv.key}"`;
    out.string(kv.key);
    out.u32(kv.type);
    if (kv.type === GgufValueType.ARRAY) {
      const et = kv.elementType;
      if (!(et >= 0 && et <= GgufValueType.FLOAT64) || (et as number) === GgufValueType.ARRAY) {
        throw new RangeError(`Bad array element type ${et} of ${what}: expected a scalar type`);
      }
      if (!Array.isArray(kv.value)) throw new TypeError(`Bad value of ${what}: expected an array`);
      out.u32(et);
      out.size(kv.value.length);
      for (const v of kv.value) writeScalar(out, et, v, what);
    } else {
      writeScalar(out, kv.type, kv.value, what);
    }
  }

  const names = new Set<string>();
  const tensors: { offsetBytes: number; byteLength: number }[] = [];
  let offsetBytes = 0;
  for (const t of spec.tensors) {
    if (names.has(t.name)) throw new RangeError(`Duplicate tensor name "${t.name}"`);
    names.add(t.name);
    const info = GGML_TYPES.get(t.type);
    if (!info) throw new RangeError(`Unknown ggml type ${t.type} of tensor "${t.name}"`);
    if (t.ne.length < 1 || t.ne.length > 4) {
      throw new RangeError(`Bad dims of tensor "${t.name}": expected 1..4, found ${t.ne.length}`);
    }
    let nElements = 1;
    for (const d of t.ne) {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new RangeError(`Bad shape of tensor "${t.name}": [${t.ne.join(", ")}]`);
      }
      nElements *= d;
    }
    if (t.ne[0]! % info.blockSize !== 0) {
      throw new RangeError(
        `Bad shape of tensor "${t.name}": row length ${
          t.ne[0]
        } of a ${info.name} tensor is not a multiple of its block size ${info.blockSize}`,
      );
    }
    const byteLength = (nElements / info.blockSize) * info.typeSize;
    out.string(t.name);
    out.u32(t.ne.length);
    for (const d of t.ne) out.size(d);
    out.u32(t.type);
    out.size(offsetBytes);
    tensors.push({ offsetBytes, byteLength });
    offsetBytes += alignUp(byteLength, alignment);
  }
  if (spec.tensors.length > 0) out.zeros(alignUp(out.length, alignment) - out.length);
  const header = out.bytes();
  return {
    header,
    alignment,
    dataOffset: header.length,
    tensors,
    totalBytes: header.length + offsetBytes,
  };
}

async function emit(spec: GgufWriteSpec, sink: ByteSink, onProgress?: GgufWriteProgress) {
  const layout = layoutGguf(spec);
  await sink.write(layout.header);
  let bytesDone = layout.header.length;
  const zeros = new Uint8Array(layout.alignment);
  const n = spec.tensors.length;
  for (let i = 0; i < n; i++) {
    const t = spec.tensors[i]!;
    const { byteLength } = layout.tensors[i]!;
    const data = await t.data();
    if (!(data instanceof Uint8Array) || data.byteLength !== byteLength) {
      throw new RangeError(
        `Bad data of tensor "${t.name}": expected ${byteLength} bytes, found ${data?.byteLength}`,
      );
    }
    if (byteLength > 0) await sink.write(data);
    const pad = alignUp(byteLength, layout.alignment) - byteLength;
    if (pad > 0) await sink.write(zeros.subarray(0, pad));
    bytesDone += byteLength + pad;
    onProgress?.(i + 1, n, bytesDone, layout.totalBytes);
  }
}

/**
 * Writes a GGUF/PWRI file tensor by tensor (only one tensor's bytes in memory at a time) to a
 * temporary file beside `path`, then renames it into place; on failure the temporary file is
 * removed and `path` is left untouched.
 *
 * @param path Destination file.
 * @param spec Metadata and tensors; each `data()` is called once, in order.
 * @param opts `onProgress` is called after each tensor.
 * @throws {RangeError | TypeError} If the spec is invalid or a provider returns the wrong size.
 * @throws {FileWriteError} If the directory is missing, `path` is a directory, or a write fails
 *   (checked before any provider runs where it can be).
 *
 * @example Write and read back
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { GgmlType, GgufValueType } from "./types.ts";
 * import { writeGguf } from "./writer.ts";
 * import { parseGguf } from "./reader.ts";
 * const path = await Deno.makeTempFile({ suffix: ".gguf" });
 * await writeGguf(path, {
 *   magic: "PWRI",
 *   metadata: [{ key: "general.architecture", type: GgufValueType.STRING, value: "llama" }],
 *   tensors: [{ name: "w", type: GgmlType.F32, ne: [2], data: () => new Uint8Array(8) }],
 * });
 * const file = parseGguf(await Deno.readFile(path));
 * equal(file.kind, "powerinfer-model");
 * equal(file.tensorData("w").length, 8);
 * await Deno.remove(path);
 * ```
 */
export async function writeGguf(
  path: string,
  spec: GgufWriteSpec,
  opts?: { onProgress?: GgufWriteProgress },
): Promise<void> {
  checkOutputPath(path);
  const tmp = tempPathBeside(path);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  } catch (error) {
    throw fileWriteError(path, error);
  }
  let closed = false;
  try {
    const sink: ByteSink = {
      async write(chunk) {
        let done = 0;
        try {
          while (done < chunk.length) done += await file.write(chunk.subarray(done));
        } catch (error) {
          throw fileWriteError(path, error);
        }
      },
    };
    await emit(spec, sink, opts?.onProgress);
    file.close();
    closed = true;
    try {
      await Deno.rename(tmp, path);
    } catch (error) {
      throw fileWriteError(path, error);
    }
  } catch (error) {
    if (!closed) file.close();
    await Deno.remove(tmp).catch(() => {});
    throw error;
  }
}

/**
 * Encodes a whole GGUF/PWRI file in memory (tests, small files).
 *
 * @param spec Metadata and tensors; each `data()` is called once, in order.
 * @returns The file bytes.
 * @throws {RangeError | TypeError} If the spec is invalid or a provider returns the wrong size.
 *
 * @example A file without tensors ends after its metadata
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { GgufValueType } from "./types.ts";
 * import { serializeGguf } from "./writer.ts";
 * const bytes = await serializeGguf({
 *   metadata: [{ key: "a", type: GgufValueType.UINT8, value: 7 }],
 *   tensors: [],
 * });
 * equal(bytes.length, 4 + 4 + 8 + 8 + (8 + 1) + 4 + 1);
 * ```
 */
export async function serializeGguf(spec: GgufWriteSpec): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  await emit(spec, {
    write(chunk) {
      chunks.push(chunk.slice());
      total += chunk.length;
    },
  });
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
