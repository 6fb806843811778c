/**
 * GGUF enums and type tables (spec: shared/spec/gguf.md §1, §3).
 *
 * @module
 */

/** ggml tensor types by their u32 id in GGUF files. */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 16,
  I16 = 17,
  I32 = 18,
}

/** Block size (elements) and bytes per block of one ggml type. */
export interface GgmlTypeInfo {
  readonly name: string;
  readonly blockSize: number;
  readonly typeSize: number;
}

/** Every ggml type this toolkit knows, by id. */
export const GGML_TYPES: ReadonlyMap<GgmlType, GgmlTypeInfo> = new Map([
  [GgmlType.F32, { name: "F32", blockSize: 1, typeSize: 4 }],
  [GgmlType.F16, { name: "F16", blockSize: 1, typeSize: 2 }],
  [GgmlType.Q4_0, { name: "Q4_0", blockSize: 32, typeSize: 18 }],
  [GgmlType.Q4_1, { name: "Q4_1", blockSize: 32, typeSize: 20 }],
  [GgmlType.Q5_0, { name: "Q5_0", blockSize: 32, typeSize: 22 }],
  [GgmlType.Q5_1, { name: "Q5_1", blockSize: 32, typeSize: 24 }],
  [GgmlType.Q8_0, { name: "Q8_0", blockSize: 32, typeSize: 34 }],
  [GgmlType.Q8_1, { name: "Q8_1", blockSize: 32, typeSize: 40 }],
  [GgmlType.Q2_K, { name: "Q2_K", blockSize: 256, typeSize: 84 }],
  [GgmlType.Q3_K, { name: "Q3_K", blockSize: 256, typeSize: 110 }],
  [GgmlType.Q4_K, { name: "Q4_K", blockSize: 256, typeSize: 144 }],
  [GgmlType.Q5_K, { name: "Q5_K", blockSize: 256, typeSize: 176 }],
  [GgmlType.Q6_K, { name: "Q6_K", blockSize: 256, typeSize: 210 }],
  [GgmlType.Q8_K, { name: "Q8_K", blockSize: 256, typeSize: 292 }],
  [GgmlType.I8, { name: "I8", blockSize: 1, typeSize: 1 }],
  [GgmlType.I16, { name: "I16", blockSize: 1, typeSize: 2 }],
  [GgmlType.I32, { name: "I32", blockSize: 1, typeSize: 4 }],
]);

/** Name of a ggml type id, or `"unknown(<id>)"`. */
export function ggmlTypeName(type: number): string {
  return GGML_TYPES.get(type)?.name ?? `unknown(${type})`;
}

/**
 * Bytes taken by a tensor of `type` with ggml dims `ne` (missing dims are 1).
 *
 * @throws {RangeError} If the type is unknown or the element count (or the row length) is not
 * a multiple of the block size.
 */
export function tensorByteSize(type: GgmlType, ne: readonly number[]): number {
  const info = GGML_TYPES.get(type);
  if (!info) throw new RangeError(`Unknown ggml type ${type}`);
  const nElements = ne.reduce((a, b) => a * b, 1);
  if ((ne[0] ?? 1) % info.blockSize !== 0) {
    throw new RangeError(
      `Row length ${
        ne[0]
      } of a ${info.name} tensor is not a multiple of its block size ${info.blockSize}`,
    );
  }
  return (nElements / info.blockSize) * info.typeSize;
}

/** `n` rounded up to a multiple of `alignment` (GGUF data offsets and tensor padding). */
export function alignUp(n: number, alignment: number): number {
  const r = n % alignment;
  return r === 0 ? n : n + alignment - r;
}

/** Bytes taken by one row (`ne[0]` elements) of `type`. */
export function rowByteSize(type: GgmlType, nCols: number): number {
  return tensorByteSize(type, [nCols]);
}

/** GGUF metadata value types by their u32 tag. */
export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/**
 * A scalar metadata value: numbers for 8..32-bit ints and floats, `bigint` for UINT64/INT64,
 * `boolean` for BOOL, `string` for STRING.
 */
export type GgufScalar = number | bigint | boolean | string;

/** One metadata entry, as read or to be written. Key order is file order. */
export type GgufKv =
  | {
    readonly key: string;
    readonly type: Exclude<GgufValueType, GgufValueType.ARRAY>;
    readonly value: GgufScalar;
  }
  | {
    readonly key: string;
    readonly type: GgufValueType.ARRAY;
    readonly elementType: Exclude<GgufValueType, GgufValueType.ARRAY>;
    readonly value: readonly GgufScalar[];
  };

/** File magics: "GGUF" = dense llama.cpp file, "PWRI" = PowerInfer file. */
export type GgufMagic = "GGUF" | "PWRI";

/** What a file is: a dense GGUF model/vocab, a PowerInfer model, or a PowerInfer GPU index. */
export type GgufKind = "gguf" | "powerinfer-model" | "powerinfer-gpu-index";

/** Default and fallback alignment of the data section. */
export const GGUF_DEFAULT_ALIGNMENT = 32;
