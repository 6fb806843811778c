/**
 * safetensors reader: an 8-byte little-endian header length, a JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`, then the data.
 * Single files and sharded checkpoints (`model.safetensors.index.json` with a `weight_map`) are
 * read lazily: listing tensors reads only the headers.
 *
 * @module
 */

import { CheckpointFormatError } from "../errors.ts";
import { type ByteSource, bytesSource, FileSource } from "../torch/source.ts";
import type { TorchDType, TorchTensor } from "../torch/torch.ts";

/** safetensors dtype names → torch dtype names and element sizes. */
const DTYPES: Readonly<Record<string, [TorchDType, number]>> = {
  F32: ["float32", 4],
  F16: ["float16", 2],
  BF16: ["bfloat16", 2],
  F64: ["float64", 8],
  I64: ["int64", 8],
  I32: ["int32", 4],
  I16: ["int16", 2],
  I8: ["int8", 1],
  U8: ["uint8", 1],
  BOOL: ["bool", 1],
};

/** Header JSON larger than this is refused (real headers are a few MB at most). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** A tensor in a safetensors file, read on demand. */
export interface SafetensorsTensorRef {
  readonly name: string;
  readonly dtype: TorchDType;
  readonly shape: number[];
  readonly byteLength: number;
  load(): TorchTensor;
}

/** One opened safetensors file. */
export class SafetensorsFile implements Disposable {
  readonly source: ByteSource;
  /** Tensors in header order. */
  readonly tensors: ReadonlyMap<string, SafetensorsTensorRef>;
  readonly metadata: Readonly<Record<string, string>>;
  #close: () => void;

  private constructor(
    source: ByteSource,
    tensors: Map<string, SafetensorsTensorRef>,
    metadata: Record<string, string>,
    close: () => void,
  ) {
    this.source = source;
    this.tensors = tensors;
    this.metadata = metadata;
    this.#close = close;
  }

  /**
   * Parses a safetensors header and checks every tensor's byte range.
   *
   * @param input The whole file, a ByteSource, or a path (opened for random access).
   * @returns The file with lazy tensor references.
   * @throws {CheckpointFormatError} If the header is truncated, not JSON, or inconsistent.
   *
   * @example A too-short file is rejected
   * ```ts
   * import { throws } from "node:assert/strict";
   * import { CheckpointFormatError } from "../errors.ts";
   * import { SafetensorsFile } from "./safetensors.ts";
   * throws(() => SafetensorsFile.open(new Uint8Array(4)), CheckpointFormatError);
   * ```
   */
  static open(input: Uint8Array | ByteSource | string): SafetensorsFile {
    let source: ByteSource;
    let close = () => {};
    if (typeof input === "string") {
      const f = new FileSource(input);
      source = f;
      close = () => f.close();
    } else source = input instanceof Uint8Array ? bytesSource(input) : input;
    try {
      return SafetensorsFile.#parse(source, close);
    } catch (e) {
      close();
      throw e;
    }
  }

  static #parse(source: ByteSource, close: () => void): SafetensorsFile {
    const size = source.byteLength;
    if (size < 8) {
      throw new CheckpointFormatError(`Safetensors file of ${size} bytes has no header length`);
    }
    const lenBytes = source.read(0, 8);
    const headerLength = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(
      0,
      true,
    );
    if (headerLength > BigInt(Math.min(size - 8, MAX_HEADER_BYTES))) {
      throw new CheckpointFormatError(
        `Safetensors header length ${headerLength} does not fit the ${size}-byte file`,
      );
    }
    const n = Number(headerLength);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(source.read(8, n)));
    } catch (cause) {
      throw new CheckpointFormatError("Safetensors header is not valid UTF-8 JSON", { cause });
    }
    if (header === null || typeof header !== "object" || Array.isArray(header)) {
      throw new CheckpointFormatError("Safetensors header is not a JSON object");
    }
    const dataStart = 8 + n;
    const dataLength = size - dataStart;
    const tensors = new Map<string, SafetensorsTensorRef>();
    let metadata: Record<string, string> = {};
    for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
      if (name === "__metadata__") {
        if (info && typeof info === "object") metadata = info as Record<string, string>;
        continue;
      }
      const bad = (why: string): never => {
        throw new CheckpointFormatError(`Safetensors tensor "${name}": ${why}`);
      };
      if (!info || typeof info !== "object") bad("entry is not an object");
      const { dtype, shape, data_offsets } = info as Record<string, unknown>;
      const dt = typeof dtype === "string" ? DTYPES[dtype] : undefined;
      if (!dt) bad(`unsupported dtype ${JSON.stringify(dtype)}`);
      if (
        !Array.isArray(shape) || shape.length > 8 ||
        !shape.every((d) => Number.isSafeInteger(d) && d >= 0)
      ) bad(`bad shape ${JSON.stringify(shape)}`);
      if (
        !Array.isArray(data_offsets) || data_offsets.length !== 2 ||
        !data_offsets.every((d) => Number.isSafeInteger(d) && d >= 0)
      ) bad(`bad data_offsets ${JSON.stringify(data_offsets)}`);
      const [begin, end] = data_offsets as [number, number];
      const [torchDtype, es] = dt!;
      const numel = (shape as number[]).reduce((a, b) => a * b, 1);
      if (end < begin || end > dataLength) {
        bad(`data_offsets [${begin}, ${end}] outside the ${dataLength} data bytes`);
      }
      if (end - begin !== numel * es) {
        bad(`holds ${end - begin} bytes: expected ${numel * es} for shape [${shape}] ${dtype}`);
      }
      const offset = dataStart + begin;
      const byteLength = end - begin;
      tensors.set(name, {
        name,
        dtype: torchDtype,
        shape: [...(shape as number[])],
        byteLength,
        load: () => ({
          dtype: torchDtype,
          shape: [...(shape as number[])],
          data: source.read(offset, byteLength),
        }),
      });
    }
    return new SafetensorsFile(source, tensors, metadata, close);
  }

  close(): void {
    this.#close();
    this.#close = () => {};
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Reads `model.safetensors.index.json`: which shard holds each tensor, and the shard file names
 * in the order they first appear.
 *
 * @param text The index JSON.
 * @returns `weightMap` (tensor → file) and `files` in first-appearance order.
 * @throws {CheckpointFormatError} If the index has no `weight_map` object of strings.
 */
export function parseSafetensorsIndex(
  text: string,
): { weightMap: Map<string, string>; files: string[] } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new CheckpointFormatError("Safetensors index is not valid JSON", { cause });
  }
  const map = (json as { weight_map?: unknown })?.weight_map;
  if (!map || typeof map !== "object" || Array.isArray(map)) {
    throw new CheckpointFormatError("Safetensors index has no weight_map object");
  }
  const weightMap = new Map<string, string>();
  const files: string[] = [];
  for (const [k, v] of Object.entries(map)) {
    if (typeof v !== "string" || v.includes("/") || v.includes("\\") || v.startsWith(".")) {
      throw new CheckpointFormatError(`Safetensors index maps "${k}" to a bad file name`);
    }
    weightMap.set(k, v);
    if (!files.includes(v)) files.push(v);
  }
  return { weightMap, files };
}
