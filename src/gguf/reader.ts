/**
 * GGUF / PowerInfer GGUF reader (spec: shared/spec/gguf.md §1–§3, §7).
 *
 * The parser reads only the header region (magic, version, metadata, tensor infos) through a
 * byte source; tensor payloads are never touched until {@linkcode GgufFile.tensorData} hands out
 * a zero-copy view of one tensor. Every length and count field is checked against the bytes that
 * remain BEFORE anything is allocated, so a lying file gives a {@linkcode GgufFormatError} naming
 * the byte offset, never a huge allocation.
 *
 * Decisions beyond PowerInfer's reader (which is laxer):
 * - Versions 2 and 3 are accepted; 0, 1 and anything above 3 are rejected (PowerInfer has no upper
 *   bound, but a future layout change would be misread silently).
 * - Strings must be valid UTF-8 (every writer emits UTF-8); BOOL bytes must be 0 or 1.
 * - Duplicate keys or tensor names, overlapping tensors, misaligned offsets and tensors that end
 *   past the file are errors.
 *
 * @module
 */

import { GgufFormatError, ModelConfigError } from "../errors.ts";
import {
  alignUp,
  GGML_TYPES,
  type GgmlType,
  GGUF_DEFAULT_ALIGNMENT,
  type GgufKind,
  type GgufKv,
  type GgufMagic,
  type GgufScalar,
  GgufValueType,
} from "./types.ts";

/** One tensor as described by the file's tensor-info section. */
export interface GgufTensorInfo {
  /** Tensor name, verbatim (`"blk.0.ffn_up.weight"`). */
  name: string;
  /** ggml type id. */
  type: GgmlType;
  /** Dims in ggml order (`ne[0]` is contiguous); 1 to 4 entries as stored. */
  ne: number[];
  /** Offset of the payload from the start of the data section. */
  offsetBytes: number;
  /** Payload size in bytes (type × shape, without padding). */
  byteLength: number;
}

/**
 * Where the parser and the tensor views get their bytes: an in-memory array or a mapping.
 * `view` returns a zero-copy window; `close` releases the underlying resource (idempotent).
 */
export interface GgufByteSource {
  readonly byteLength: number;
  view(offsetBytes: number, byteLength: number): Uint8Array;
  close?(): void;
}

/** Minimum encoded size of one KV pair: key length u64 + value type u32 + a 1-byte payload. */
const MIN_KV_BYTES = 8 + 4 + 1;
/** Minimum encoded size of one tensor info: name length + n_dims + one ne + type + offset. */
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8;
/** The header is read in windows of this size from a byte source (only for mappings). */
const HEADER_WINDOW_BYTES = 1 << 20;
const MAX_DIMS = 4;
const TWO_32 = 4294967296;
const VALUE_TYPE_NAMES: readonly string[] = [
  "UINT8",
  "INT8",
  "UINT16",
  "INT16",
  "UINT32",
  "INT32",
  "FLOAT32",
  "BOOL",
  "STRING",
  "ARRAY",
  "UINT64",
  "INT64",
  "FLOAT64",
];
/** Payload bytes per value type; 8 for STRING is its minimum (the length prefix). */
const VALUE_TYPE_MIN_BYTES: readonly number[] = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];

/** Name of a GGUF value type tag, or `"unknown(<tag>)"`. */
export function ggufValueTypeName(type: number): string {
  return VALUE_TYPE_NAMES[type] ?? `unknown(${type})`;
}

// ignoreBOM: a token may be exactly U+FEFF (the LLaMA vocab has one); it must not be stripped.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Strings up to this many bytes are decoded in JS (a TextDecoder call costs more for them). */
const SHORT_STRING_BYTES = 64;
const shortUnits = new Uint16Array(SHORT_STRING_BYTES * 2);

/**
 * Decodes well-formed UTF-8 of at most SHORT_STRING_BYTES bytes, or returns undefined for anything
 * else (the caller then uses the fatal TextDecoder, which reports the error). Accepts exactly what
 * a fatal decoder accepts: no overlongs, no surrogates, nothing above U+10FFFF.
 */
function decodeShortUtf8(b: Uint8Array, at: number, n: number): string | undefined {
  let u = 0;
  const end = at + n;
  while (at < end) {
    const c = b[at++]!;
    if (c < 0x80) {
      shortUnits[u++] = c;
    } else if (c >= 0xc2 && c <= 0xdf) {
      if (at >= end) return undefined;
      const c1 = b[at++]!;
      if ((c1 & 0xc0) !== 0x80) return undefined;
      shortUnits[u++] = ((c & 0x1f) << 6) | (c1 & 0x3f);
    } else if (c >= 0xe0 && c <= 0xef) {
      if (at + 1 >= end) return undefined;
      const c1 = b[at++]!;
      const c2 = b[at++]!;
      const lo = c === 0xe0 ? 0xa0 : 0x80;
      const hi = c === 0xed ? 0x9f : 0xbf;
      if (c1 < lo || c1 > hi || (c2 & 0xc0) !== 0x80) return undefined;
      shortUnits[u++] = ((c & 0x0f) << 12) | ((c1 & 0x3f) << 6) | (c2 & 0x3f);
    } else if (c >= 0xf0 && c <= 0xf4) {
      if (at + 2 >= end) return undefined;
      const c1 = b[at++]!;
      const c2 = b[at++]!;
      const c3 = b[at++]!;
      const lo = c === 0xf0 ? 0x90 : 0x80;
      const hi = c === 0xf4 ? 0x8f : 0xbf;
      if (c1 < lo || c1 > hi || (c2 & 0xc0) !== 0x80 || (c3 & 0xc0) !== 0x80) return undefined;
      const cp = (((c & 0x07) << 18) | ((c1 & 0x3f) << 12) | ((c2 & 0x3f) << 6) | (c3 & 0x3f)) -
        0x10000;
      shortUnits[u++] = 0xd800 | (cp >> 10);
      shortUnits[u++] = 0xdc00 | (cp & 0x3ff);
    } else {
      return undefined;
    }
  }
  return String.fromCharCode.apply(null, shortUnits.subarray(0, u) as unknown as number[]);
}

/** Sequential little-endian reader over a byte source, windowed so a mapping is read lazily. */
class Cursor {
  readonly size: number;
  pos = 0;
  #source: GgufByteSource;
  #buf: Uint8Array;
  #dv: DataView;
  #base = 0;

  constructor(source: GgufByteSource) {
    this.#source = source;
    this.size = source.byteLength;
    this.#buf = source.view(0, Math.min(this.size, HEADER_WINDOW_BYTES));
    this.#dv = new DataView(this.#buf.buffer, this.#buf.byteOffset, this.#buf.byteLength);
  }

  get remaining(): number {
    return this.size - this.pos;
  }

  /** Ensures `n` bytes can be read at `pos`; `what` names the field for the error. */
  need(n: number, what: string): void {
    if (n > this.size - this.pos) {
      throw new GgufFormatError(
        `Truncated ${what}: expected ${n} bytes, found ${this.size - this.pos}`,
        this.pos,
      );
    }
    if (this.pos + n > this.#base + this.#buf.byteLength) {
      const length = Math.min(this.size - this.pos, Math.max(n, HEADER_WINDOW_BYTES));
      this.#buf = this.#source.view(this.pos, length);
      this.#dv = new DataView(this.#buf.buffer, this.#buf.byteOffset, this.#buf.byteLength);
      this.#base = this.pos;
    }
  }

  u8(what: string): number {
    this.need(1, what);
    return this.#buf[this.pos++ - this.#base]!;
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.#dv.getUint32(this.pos - this.#base, true);
    this.pos += 4;
    return v;
  }

  /** A u64 that must fit a JS number exactly (counts, lengths, dims, offsets). */
  u64(what: string): number {
    this.need(8, what);
    const at = this.pos - this.#base;
    const lo = this.#dv.getUint32(at, true);
    const hi = this.#dv.getUint32(at + 4, true);
    if (hi > 0x1fffff) {
      const value = this.#dv.getBigUint64(at, true);
      throw new GgufFormatError(
        `Absurd ${what}: expected at most 2^53 - 1, found ${value}`,
        this.pos,
      );
    }
    this.pos += 8;
    return hi * TWO_32 + lo;
  }

  bytes(n: number): Uint8Array {
    const at = this.pos - this.#base;
    this.pos += n;
    return this.#buf.subarray(at, at + n);
  }

  string(what: string): string {
    const start = this.pos;
    const n = this.u64(`${what} length`);
    if (n > this.size - this.pos) {
      throw new GgufFormatError(
        `Absurd ${what} length: expected at most ${
          this.size - this.pos
        } remaining bytes, found ${n}`,
        start,
      );
    }
    this.need(n, what);
    const at = this.pos - this.#base;
    this.pos += n;
    if (n <= SHORT_STRING_BYTES) {
      const fast = decodeShortUtf8(this.#buf, at, n);
      if (fast !== undefined) return fast;
    }
    return this.#decode(at, n, start, what);
  }

  #decode(at: number, n: number, start: number, what: string): string {
    try {
      return utf8.decode(this.#buf.subarray(at, at + n));
    } catch (cause) {
      throw new GgufFormatError(`Invalid UTF-8 in ${what}`, start, { cause });
    }
  }

  /** `n` payloads of scalar `type`; fixed-size types are bounds-checked once. */
  array(type: GgufValueType, n: number, what: string): GgufScalar[] {
    const out: GgufScalar[] = new Array(n);
    const size = VALUE_TYPE_MIN_BYTES[type]!;
    if (type === GgufValueType.STRING || type === GgufValueType.BOOL) {
      for (let i = 0; i < n; i++) out[i] = this.scalar(type, what);
      return out;
    }
    this.need(n * size, what);
    const dv = this.#dv;
    const at = this.pos - this.#base;
    this.pos += n * size;
    switch (type) {
      case GgufValueType.UINT8:
        for (let i = 0; i < n; i++) out[i] = dv.getUint8(at + i);
        break;
      case GgufValueType.INT8:
        for (let i = 0; i < n; i++) out[i] = dv.getInt8(at + i);
        break;
      case GgufValueType.UINT16:
        for (let i = 0; i < n; i++) out[i] = dv.getUint16(at + 2 * i, true);
        break;
      case GgufValueType.INT16:
        for (let i = 0; i < n; i++) out[i] = dv.getInt16(at + 2 * i, true);
        break;
      case GgufValueType.UINT32:
        for (let i = 0; i < n; i++) out[i] = dv.getUint32(at + 4 * i, true);
        break;
      case GgufValueType.INT32:
        for (let i = 0; i < n; i++) out[i] = dv.getInt32(at + 4 * i, true);
        break;
      case GgufValueType.FLOAT32:
        for (let i = 0; i < n; i++) out[i] = dv.getFloat32(at + 4 * i, true);
        break;
      case GgufValueType.UINT64:
        for (let i = 0; i < n; i++) out[i] = dv.getBigUint64(at + 8 * i, true);
        break;
      case GgufValueType.INT64:
        for (let i = 0; i < n; i++) out[i] = dv.getBigInt64(at + 8 * i, true);
        break;
      case GgufValueType.FLOAT64:
        for (let i = 0; i < n; i++) out[i] = dv.getFloat64(at + 8 * i, true);
        break;
      default:
        throw new GgufFormatError(`Unknown value type ${type} in ${what}`, this.pos);
    }
    return out;
  }

  /** One scalar payload of `type` (never ARRAY). */
  scalar(type: GgufValueType, what: string): GgufScalar {
    switch (type) {
      case GgufValueType.UINT8:
        return this.u8(what);
      case GgufValueType.INT8: {
        const v = this.u8(what);
        return v > 127 ? v - 256 : v;
      }
      case GgufValueType.UINT16:
      case GgufValueType.INT16: {
        this.need(2, what);
        const at = this.pos - this.#base;
        this.pos += 2;
        return type === GgufValueType.UINT16
          ? this.#dv.getUint16(at, true)
          : this.#dv.getInt16(at, true);
      }
      case GgufValueType.UINT32:
        return this.u32(what);
      case GgufValueType.INT32:
      case GgufValueType.FLOAT32: {
        this.need(4, what);
        const at = this.pos - this.#base;
        this.pos += 4;
        return type === GgufValueType.INT32
          ? this.#dv.getInt32(at, true)
          : this.#dv.getFloat32(at, true);
      }
      case GgufValueType.BOOL: {
        const at = this.pos;
        const v = this.u8(what);
        if (v > 1) {
          throw new GgufFormatError(`Bad BOOL in ${what}: expected 0 or 1, found ${v}`, at);
        }
        return v === 1;
      }
      case GgufValueType.STRING:
        return this.string(what);
      case GgufValueType.UINT64:
      case GgufValueType.INT64:
      case GgufValueType.FLOAT64: {
        this.need(8, what);
        const at = this.pos - this.#base;
        this.pos += 8;
        if (type === GgufValueType.UINT64) return this.#dv.getBigUint64(at, true);
        if (type === GgufValueType.INT64) return this.#dv.getBigInt64(at, true);
        return this.#dv.getFloat64(at, true);
      }
      default:
        throw new GgufFormatError(`Unknown value type ${type} in ${what}`, this.pos);
    }
  }
}

/** The parsed header of a GGUF/PWRI file (everything but the tensor payloads). */
interface GgufHeader {
  magic: GgufMagic;
  kind: GgufKind;
  version: number;
  alignment: number;
  dataOffset: number;
  metadata: Map<string, GgufKv>;
  tensors: GgufTensorInfo[];
}

function readValueType(cur: Cursor, what: string): GgufValueType {
  const at = cur.pos;
  const t = cur.u32(`${what} value type`);
  if (t > GgufValueType.FLOAT64) {
    throw new GgufFormatError(`Unknown value type ${t} of ${what}: expected 0..12`, at);
  }
  return t;
}

function readKv(cur: Cursor): GgufKv {
  const key = cur.string("metadata key");
  const what = `key "${key}"`;
  const type = readValueType(cur, what);
  if (type !== GgufValueType.ARRAY) {
    return { key, type, value: cur.scalar(type, what) };
  }
  const at = cur.pos;
  const elementType = readValueType(cur, `${what} array element`);
  if (elementType === GgufValueType.ARRAY) {
    throw new GgufFormatError(`Array of arrays in ${what}: expected a scalar element type`, at);
  }
  const countAt = cur.pos;
  const n = cur.u64(`${what} array count`);
  const minBytes = VALUE_TYPE_MIN_BYTES[elementType]!;
  if (n > cur.remaining / minBytes) {
    throw new GgufFormatError(
      `Absurd array count of ${what}: ${n} ${ggufValueTypeName(elementType)} need at least ${
        n * minBytes
      } bytes, ${cur.remaining} remain`,
      countAt,
    );
  }
  return { key, type, elementType, value: cur.array(elementType, n, what) };
}

function readTensorInfo(cur: Cursor, alignment: number): GgufTensorInfo & { at: number } {
  const at = cur.pos;
  const name = cur.string("tensor name");
  const what = `tensor "${name}"`;
  const dimsAt = cur.pos;
  const nDims = cur.u32(`${what} n_dims`);
  if (nDims < 1 || nDims > MAX_DIMS) {
    throw new GgufFormatError(
      `Bad n_dims of ${what}: expected 1..${MAX_DIMS}, found ${nDims}`,
      dimsAt,
    );
  }
  const ne: number[] = [];
  let nElements = 1;
  for (let i = 0; i < nDims; i++) {
    const d = cur.u64(`${what} ne[${i}]`);
    ne.push(d);
    nElements *= d;
  }
  const typeAt = cur.pos;
  const type = cur.u32(`${what} type`);
  const info = GGML_TYPES.get(type);
  if (!info) {
    throw new GgufFormatError(`Unknown ggml type ${type} of ${what}`, typeAt);
  }
  if (!Number.isSafeInteger(nElements)) {
    throw new GgufFormatError(`Absurd shape of ${what}: [${ne.join(", ")}]`, dimsAt);
  }
  if (ne[0]! % info.blockSize !== 0) {
    throw new GgufFormatError(
      `Bad shape of ${what}: row length ${
        ne[0]
      } of a ${info.name} tensor is not a multiple of its block size ${info.blockSize}`,
      dimsAt,
    );
  }
  const byteLength = (nElements / info.blockSize) * info.typeSize;
  const offsetAt = cur.pos;
  const offsetBytes = cur.u64(`${what} offset`);
  if (offsetBytes % alignment !== 0) {
    throw new GgufFormatError(
      `Misaligned offset of ${what}: expected a multiple of ${alignment}, found ${offsetBytes}`,
      offsetAt,
    );
  }
  return { name, type, ne, offsetBytes, byteLength, at };
}

/** Parses the header of a GGUF/PWRI byte source (tensor payloads stay untouched). */
function parseHeader(source: GgufByteSource): GgufHeader {
  const cur = new Cursor(source);
  cur.need(4, "magic");
  const m = cur.bytes(4);
  const magicText = String.fromCharCode(m[0]!, m[1]!, m[2]!, m[3]!);
  if (magicText !== "GGUF" && magicText !== "PWRI") {
    const hex = Array.from(m, (b) => b.toString(16).padStart(2, "0")).join(" ");
    throw new GgufFormatError(`Bad magic: expected "GGUF" or "PWRI", found ${hex}`, 0);
  }
  const magic: GgufMagic = magicText;
  const version = cur.u32("version");
  if (version !== 2 && version !== 3) {
    throw new GgufFormatError(`Unsupported GGUF version ${version}: expected 2 or 3`, 4);
  }
  const nTensors = cur.u64("tensor count");
  const nKvAt = cur.pos;
  const nKv = cur.u64("metadata count");
  if (nKv > cur.remaining / MIN_KV_BYTES) {
    throw new GgufFormatError(
      `Absurd metadata count ${nKv}: ${cur.remaining} remaining bytes hold at most ${
        Math.floor(cur.remaining / MIN_KV_BYTES)
      }`,
      nKvAt,
    );
  }
  if (nTensors > cur.remaining / MIN_TENSOR_INFO_BYTES) {
    throw new GgufFormatError(
      `Absurd tensor count ${nTensors}: ${cur.remaining} remaining bytes hold at most ${
        Math.floor(cur.remaining / MIN_TENSOR_INFO_BYTES)
      } tensor infos`,
      8,
    );
  }

  const metadata = new Map<string, GgufKv>();
  let alignmentAt = 0;
  for (let i = 0; i < nKv; i++) {
    const at = cur.pos;
    const kv = readKv(cur);
    if (metadata.has(kv.key)) {
      throw new GgufFormatError(`Duplicate metadata key "${kv.key}"`, at);
    }
    if (kv.key === "general.alignment") alignmentAt = at;
    metadata.set(kv.key, kv);
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const alignKv = metadata.get("general.alignment");
  if (alignKv) {
    const v = alignKv.value;
    if (alignKv.type !== GgufValueType.UINT32 || typeof v !== "number") {
      throw new GgufFormatError(
        `Bad general.alignment: expected type UINT32, found ${ggufValueTypeName(alignKv.type)}`,
        alignmentAt,
      );
    }
    if (v === 0 || (v & (v - 1)) !== 0) {
      throw new GgufFormatError(
        `Bad general.alignment: expected a power of two, found ${v}`,
        alignmentAt,
      );
    }
    alignment = v;
  }

  const infos: (GgufTensorInfo & { at: number })[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const info = readTensorInfo(cur, alignment);
    if (names.has(info.name)) {
      throw new GgufFormatError(`Duplicate tensor name "${info.name}"`, info.at);
    }
    names.add(info.name);
    infos.push(info);
  }

  const dataOffset = alignUp(cur.pos, alignment);
  if (nTensors > 0 && dataOffset > cur.size) {
    throw new GgufFormatError(
      `Truncated padding before tensor data: expected ${dataOffset} bytes, found ${cur.size}`,
      cur.size,
    );
  }
  const dataBytes = cur.size - dataOffset;
  for (const t of infos) {
    if (t.offsetBytes + t.byteLength > dataBytes) {
      throw new GgufFormatError(
        `Truncated tensor data of "${t.name}": expected ${t.byteLength} bytes at data offset ${t.offsetBytes}, the data section has ${
          Math.max(0, dataBytes)
        }`,
        dataOffset + t.offsetBytes,
      );
    }
  }
  const sorted = infos.filter((t) => t.byteLength > 0).sort((a, b) =>
    a.offsetBytes - b.offsetBytes
  );
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const t = sorted[i]!;
    if (t.offsetBytes < prev.offsetBytes + prev.byteLength) {
      throw new GgufFormatError(
        `Overlapping tensors "${prev.name}" and "${t.name}": "${t.name}" starts at data offset ${t.offsetBytes}, expected at least ${
          prev.offsetBytes + prev.byteLength
        }`,
        t.at,
      );
    }
  }

  const arch = metadata.get("general.architecture")?.value;
  const kind: GgufKind = magic === "GGUF"
    ? "gguf"
    : arch === "generic.gpu_index"
    ? "powerinfer-gpu-index"
    : "powerinfer-model";
  const tensors = infos.map(({ name, type, ne, offsetBytes, byteLength }) => ({
    name,
    type,
    ne,
    offsetBytes,
    byteLength,
  }));
  return { magic, kind, version, alignment, dataOffset, metadata, tensors };
}

/**
 * A parsed GGUF/PWRI file: header fields, metadata, tensor infos, and lazy zero-copy tensor
 * views. Made by {@linkcode parseGguf} (bytes in memory) or `openGguf` (a memory mapping).
 * Closing it releases the mapping; views handed out earlier must not be used afterwards.
 */
export class GgufFile implements Disposable {
  /** `"GGUF"` (dense) or `"PWRI"` (PowerInfer). */
  readonly magic: GgufMagic;
  /** Dense GGUF, PowerInfer model, or PowerInfer GPU index (PWRI + arch "generic.gpu_index"). */
  readonly kind: GgufKind;
  /** 2 or 3. */
  readonly version: number;
  /** Data-section alignment (`general.alignment` or 32). */
  readonly alignment: number;
  /** Absolute byte offset of the data section. */
  readonly dataOffset: number;
  /** Total size of the file or byte array. */
  readonly byteLength: number;
  /** Metadata in file order. */
  readonly metadata: ReadonlyMap<string, GgufKv>;
  /** Tensor infos in file order. */
  readonly tensors: readonly GgufTensorInfo[];
  #byName: Map<string, GgufTensorInfo>;
  #source: GgufByteSource;
  #closed = false;

  /** Internal: use {@linkcode parseGguf} or `openGguf`. */
  constructor(source: GgufByteSource) {
    const h = parseHeader(source);
    this.#source = source;
    this.magic = h.magic;
    this.kind = h.kind;
    this.version = h.version;
    this.alignment = h.alignment;
    this.dataOffset = h.dataOffset;
    this.byteLength = source.byteLength;
    this.metadata = h.metadata;
    this.tensors = h.tensors;
    this.#byName = new Map(h.tensors.map((t) => [t.name, t]));
  }

  /** Whether {@linkcode GgufFile.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The metadata entry of `key`, or `undefined`. */
  get(key: string): GgufKv | undefined {
    return this.metadata.get(key);
  }

  #typed(key: string, type: GgufValueType): GgufScalar | undefined {
    const kv = this.metadata.get(key);
    if (!kv) return undefined;
    if (kv.type !== type) {
      const found = kv.type === GgufValueType.ARRAY
        ? `ARRAY of ${ggufValueTypeName(kv.elementType)}`
        : ggufValueTypeName(kv.type);
      throw new ModelConfigError(
        `Key "${key}" has type ${found}: expected ${ggufValueTypeName(type)}`,
      );
    }
    return kv.value as GgufScalar;
  }

  /**
   * The STRING value of `key`, or `undefined` when absent.
   * @throws {ModelConfigError} If the key holds another type.
   */
  getString(key: string): string | undefined {
    return this.#typed(key, GgufValueType.STRING) as string | undefined;
  }

  /**
   * The UINT32 value of `key`, or `undefined` when absent.
   * @throws {ModelConfigError} If the key holds another type.
   */
  getU32(key: string): number | undefined {
    return this.#typed(key, GgufValueType.UINT32) as number | undefined;
  }

  /**
   * The INT32 value of `key`, or `undefined` when absent.
   * @throws {ModelConfigError} If the key holds another type.
   */
  getI32(key: string): number | undefined {
    return this.#typed(key, GgufValueType.INT32) as number | undefined;
  }

  /**
   * The UINT64 value of `key` (a bigint), or `undefined` when absent.
   * @throws {ModelConfigError} If the key holds another type.
   */
  getU64(key: string): bigint | undefined {
    return this.#typed(key, GgufValueType.UINT64) as bigint | undefined;
  }

  /**
   * The FLOAT32 value of `key`, or `undefined` when absent.
   * @throws {ModelConfigError} If the key holds another type.
   */
  getF32(key: string): number | undefined {
    return this.#typed(key, GgufValueType.FLOAT32) as number | undefined;
  }

  /**
   * The BOOL value of `key`, or `undefined` when absent.
   * @throws {ModelConfigError} If the key holds another type.
   */
  getBool(key: string): boolean | undefined {
    return this.#typed(key, GgufValueType.BOOL) as boolean | undefined;
  }

  /**
   * The elements of the ARRAY `key` (any element type), or `undefined` when absent.
   * @throws {ModelConfigError} If the key holds a scalar.
   */
  getArray(key: string): readonly GgufScalar[] | undefined {
    return this.#typed(key, GgufValueType.ARRAY) as readonly GgufScalar[] | undefined;
  }

  /** The info of tensor `name`, or `undefined`. */
  tensor(name: string): GgufTensorInfo | undefined {
    return this.#byName.get(name);
  }

  /**
   * A zero-copy view of one tensor's bytes (`byteLength` bytes, no padding).
   *
   * @param tensor A tensor name or one of this file's infos.
   * @returns A view into the file bytes or mapping; valid until {@linkcode GgufFile.close}.
   * @throws {ModelConfigError} If the tensor is missing.
   * @throws {GgufFormatError} If the file was closed.
   */
  tensorData(tensor: string | GgufTensorInfo): Uint8Array {
    const name = typeof tensor === "string" ? tensor : tensor.name;
    if (this.#closed) {
      throw new GgufFormatError(`Cannot read tensor "${name}": the file was closed`, 0);
    }
    const info = this.#byName.get(name);
    if (!info) throw new ModelConfigError(`Tensor "${name}" is missing`);
    if (info.byteLength === 0) return new Uint8Array(0);
    return this.#source.view(this.dataOffset + info.offsetBytes, info.byteLength);
  }

  /** Releases the mapping (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#source.close?.();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A byte source over bytes already in memory. */
export function memorySource(bytes: Uint8Array): GgufByteSource {
  return {
    byteLength: bytes.byteLength,
    view: (offsetBytes, byteLength) => bytes.subarray(offsetBytes, offsetBytes + byteLength),
  };
}

/**
 * Parses a GGUF/PWRI file held in memory (or in a mapping's view). Only the header is read;
 * tensor views are created on demand and share `bytes`.
 *
 * @param bytes The whole file.
 * @returns The parsed file; `close()` only marks it closed.
 * @throws {GgufFormatError} If the bytes are not a valid GGUF v2/v3 or PWRI file.
 *
 * @example Parse a minimal file
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { parseGguf } from "./reader.ts";
 * // "GGUF", version 3, 0 tensors, 1 KV: "a" = UINT8 7
 * const bytes = new Uint8Array([
 *   0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
 *   1, 0, 0, 0, 0, 0, 0, 0, 0x61, 0, 0, 0, 0, 7,
 * ]);
 * const file = parseGguf(bytes);
 * equal(file.kind, "gguf");
 * equal(file.get("a")?.value, 7);
 * ```
 */
export function parseGguf(bytes: Uint8Array): GgufFile {
  return new GgufFile(memorySource(bytes));
}

/**
 * Parses a GGUF/PWRI file from any byte source (used by `openGguf` with a mapping).
 *
 * @param source Bytes to read; its `close` is called when the file is closed.
 * @returns The parsed file.
 * @throws {GgufFormatError} If the bytes are not a valid GGUF v2/v3 or PWRI file.
 */
export function parseGgufSource(source: GgufByteSource): GgufFile {
  return new GgufFile(source);
}
