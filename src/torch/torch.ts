/**
 * PyTorch checkpoint reader: the zip container `torch.save` writes since torch 1.6
 * (`<name>/data.pkl` + `<name>/data/<key>` storages) and the pickle inside it. Tensors come out
 * as raw little-endian bytes, contiguous and row-major; non-contiguous views are materialised.
 *
 * @module
 */

import { CheckpointFormatError } from "../errors.ts";
import { GlobalRef, type PickleCallable, unpickle } from "./pickle.ts";
import { type ByteSource, bytesSource } from "./source.ts";
import { ZipArchive } from "./zip.ts";

/** Element types a torch storage can hold (as named by `torch.dtype`). */
export type TorchDType =
  | "float32"
  | "float16"
  | "bfloat16"
  | "float64"
  | "int64"
  | "int32"
  | "int16"
  | "int8"
  | "uint8"
  | "bool";

/** One tensor: raw little-endian bytes, contiguous, row-major (`shape` in PyTorch order). */
export interface TorchTensor {
  dtype: TorchDType;
  shape: number[];
  data: Uint8Array;
}

/** Bytes per element of each dtype. */
export const TORCH_DTYPE_BYTES: Readonly<Record<TorchDType, number>> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  float64: 8,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

const STORAGE_DTYPES: Readonly<Record<string, TorchDType>> = {
  FloatStorage: "float32",
  HalfStorage: "float16",
  BFloat16Storage: "bfloat16",
  DoubleStorage: "float64",
  LongStorage: "int64",
  IntStorage: "int32",
  ShortStorage: "int16",
  CharStorage: "int8",
  ByteStorage: "uint8",
  BoolStorage: "bool",
  UntypedStorage: "uint8",
};

const MAX_DIMS = 64;

/** A storage named by a persistent id; its bytes stay in the archive until a tensor loads. */
class StorageRef {
  constructor(
    readonly archive: ZipArchive,
    readonly entryName: string,
    readonly dtype: TorchDType,
    readonly numel: number,
  ) {}
}

/**
 * A tensor whose bytes have not been read yet (so a state dict of a 10 GB shard can be listed
 * without reading it). `load()` reads and materialises it. Made by {@link openTorchStateDict}.
 *
 * @example Listing shapes without reading data
 * ```ts ignore
 * import { FileSource, openTorchStateDict } from "../../mod.ts";
 * using src = new FileSource("pytorch_model.bin");
 * for (const [name, ref] of openTorchStateDict(src)) console.log(name, ref.shape, ref.byteLength);
 * ```
 */
export class TorchTensorRef {
  readonly dtype: TorchDType;
  readonly shape: number[];
  readonly #storage: StorageRef;
  readonly #offset: number;
  readonly #stride: number[];

  constructor(storage: StorageRef, offset: number, shape: number[], stride: number[]) {
    this.#storage = storage;
    this.dtype = storage.dtype;
    this.#offset = offset;
    this.shape = shape;
    this.#stride = stride;
    validateView(storage, offset, shape, stride);
  }

  /** Number of elements. */
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Byte length of the contiguous data `load()` returns. */
  get byteLength(): number {
    return this.numel * TORCH_DTYPE_BYTES[this.dtype];
  }

  /** Whether the view is already contiguous row-major (then `load` reads only its bytes). */
  get isContiguous(): boolean {
    let expect = 1;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      if (this.shape[d]! !== 1 && this.#stride[d]! !== expect) return false;
      expect *= this.shape[d]!;
    }
    return true;
  }

  /**
   * Reads the tensor's bytes (a zero-copy view when the archive is in memory and the view is
   * contiguous).
   *
   * @returns The materialised tensor.
   * @throws {CheckpointFormatError} If the storage is missing or shorter than the view needs.
   */
  load(): TorchTensor {
    const es = TORCH_DTYPE_BYTES[this.dtype];
    const n = this.numel;
    const storage = this.#storage;
    const entry = storage.archive.entries.get(storage.entryName);
    if (!entry) {
      throw new CheckpointFormatError(`Torch storage "${storage.entryName}" is missing`);
    }
    if (entry.uncompressedSize < storage.numel * es) {
      throw new CheckpointFormatError(
        `Torch storage "${storage.entryName}" holds ${entry.uncompressedSize} bytes: expected ${
          storage.numel * es
        } (${storage.numel} ${storage.dtype})`,
      );
    }
    const shape = [...this.shape];
    if (n === 0) return { dtype: this.dtype, shape, data: new Uint8Array(0) };
    if (this.isContiguous) {
      const data = storage.archive.read(storage.entryName, {
        offsetBytes: this.#offset * es,
        byteLength: n * es,
      });
      return { dtype: this.dtype, shape, data };
    }
    const src = storage.archive.read(storage.entryName, {
      offsetBytes: 0,
      byteLength: storage.numel * es,
    });
    return {
      dtype: this.dtype,
      shape,
      data: gatherStrided(src, es, this.#offset, shape, this.#stride),
    };
  }
}

function validateView(storage: StorageRef, offset: number, shape: number[], stride: number[]) {
  const what = `Torch tensor view of storage "${storage.entryName}"`;
  if (shape.length !== stride.length || shape.length > MAX_DIMS) {
    throw new CheckpointFormatError(
      `${what} has ${shape.length} sizes and ${stride.length} strides`,
    );
  }
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new CheckpointFormatError(`${what} has storage offset ${offset}`);
  }
  let numel = 1;
  let last = offset;
  for (let d = 0; d < shape.length; d++) {
    const size = shape[d]!;
    const st = stride[d]!;
    if (!Number.isSafeInteger(size) || size < 0 || !Number.isSafeInteger(st) || st < 0) {
      throw new CheckpointFormatError(`${what} has size ${size} / stride ${st} in dim ${d}`);
    }
    numel *= size;
    last += (size - 1) * st;
  }
  if (numel === 0) return;
  if (!Number.isSafeInteger(numel) || last >= storage.numel) {
    throw new CheckpointFormatError(
      `${what} reaches element ${last} of a ${storage.numel}-element storage`,
    );
  }
  // Broadcast views (stride 0) may be larger than their storage; bound them so a lying pickle
  // cannot make us allocate gigabytes from a few bytes.
  const es = TORCH_DTYPE_BYTES[storage.dtype];
  if (numel > storage.numel && numel * es > 4 * storage.numel * es + (1 << 24)) {
    throw new CheckpointFormatError(
      `${what} expands ${storage.numel} elements to ${numel}: refusing to materialise`,
    );
  }
}

function gatherStrided(
  src: Uint8Array,
  es: number,
  offset: number,
  shape: number[],
  stride: number[],
): Uint8Array {
  const nDims = shape.length;
  const numel = shape.reduce((a, b) => a * b, 1);
  const out = new Uint8Array(numel * es);
  const inner = shape[nDims - 1]!;
  const innerStride = stride[nDims - 1]! * es;
  const idx = new Array<number>(Math.max(0, nDims - 1)).fill(0);
  let o = 0;
  for (let row = 0; row < numel / inner; row++) {
    let base = offset;
    for (let d = 0; d < nDims - 1; d++) base += idx[d]! * stride[d]!;
    let s = base * es;
    for (let i = 0; i < inner; i++) {
      for (let b = 0; b < es; b++) out[o++] = src[s + b]!;
      s += innerStride;
    }
    for (let d = nDims - 2; d >= 0; d--) {
      if (++idx[d]! < shape[d]!) break;
      idx[d] = 0;
    }
  }
  return out;
}

function intList(v: unknown, what: string): number[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === "number" && Number.isSafeInteger(x))) {
    throw new CheckpointFormatError(`Torch ${what} is not a tuple of integers`);
  }
  return v as number[];
}

function rebuildTensor(args: unknown[]): TorchTensorRef {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof StorageRef)) {
    throw new CheckpointFormatError("Torch _rebuild_tensor: first argument is not a storage");
  }
  if (typeof offset !== "number") {
    throw new CheckpointFormatError("Torch _rebuild_tensor: storage offset is not an integer");
  }
  return new TorchTensorRef(storage, offset, intList(size, "size"), intList(stride, "stride"));
}

const passFirst: PickleCallable = { call: (args) => args[0] };

function makeGlobals(): (module: string, name: string) => PickleCallable | undefined {
  return (module, name) => {
    const full = `${module}.${name}`;
    switch (full) {
      case "torch._utils._rebuild_tensor_v2":
      case "torch._utils._rebuild_tensor":
        return { call: rebuildTensor };
      case "torch._utils._rebuild_parameter":
      case "torch._utils._rebuild_parameter_with_state":
      case "torch.nn.parameter.Parameter":
      case "torch.Size":
        return passFirst;
      case "torch._tensor._rebuild_from_type_v2":
        return {
          call: ([fn, _type, args]) => {
            if (!(fn instanceof GlobalRef) || !Array.isArray(args)) {
              throw new CheckpointFormatError("Torch _rebuild_from_type_v2: malformed arguments");
            }
            return fn.impl.call(args);
          },
        };
      case "collections.OrderedDict":
        return {
          call: (args) => {
            const m = new Map<unknown, unknown>();
            if (Array.isArray(args[0])) {
              for (const kv of args[0]) if (Array.isArray(kv)) m.set(kv[0], kv[1]);
            }
            return m;
          },
          build: (obj) => obj, // the `_metadata` attribute of a state dict is not needed
        };
    }
    if (module === "torch" && name in STORAGE_DTYPES) {
      return { call: () => ({ storageType: name }) };
    }
    return undefined;
  };
}

/** Marker object for a storage class named by GLOBAL (its `call` is never used by torch). */
function storageTypeName(v: unknown): string | undefined {
  if (v instanceof GlobalRef && v.module === "torch" && v.name in STORAGE_DTYPES) return v.name;
  return undefined;
}

/**
 * Opens a torch zip checkpoint without reading tensor data: the object graph holds
 * `TorchTensorRef`s whose `load()` reads their bytes on demand.
 *
 * @param input The file bytes (or a mapping of them), or a ByteSource over an open file.
 * @returns The unpickled object graph (dicts as Map, tensors as TorchTensorRef).
 * @throws {CheckpointFormatError} If the file is not a torch zip checkpoint or is corrupt.
 *
 * @example Legacy (non-zip) pickles are refused with a hint
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { openTorchCheckpoint } from "./torch.ts";
 * throws(() => openTorchCheckpoint(new Uint8Array([0x80, 2, 0x8a, 10])), /re-save/);
 * ```
 */
export function openTorchCheckpoint(input: Uint8Array | ByteSource): unknown {
  const source = input instanceof Uint8Array ? bytesSource(input) : input;
  if (source.byteLength >= 2) {
    const head = source.read(0, 2);
    if (head[0] === 0x80 && head[1]! <= 5) {
      throw new CheckpointFormatError(
        "Legacy (pre-1.6, non-zip) torch checkpoint: re-save it with a newer torch",
      );
    }
  }
  const archive = ZipArchive.open(source);
  let pklName: string | undefined;
  for (const name of archive.entries.keys()) {
    if (name === "data.pkl" || name.endsWith("/data.pkl")) {
      pklName = name;
      break;
    }
  }
  if (!pklName) throw new CheckpointFormatError("Torch checkpoint has no data.pkl");
  const prefix = pklName.slice(0, pklName.length - "data.pkl".length);
  const byteorder = archive.entries.get(`${prefix}byteorder`);
  if (byteorder) {
    const order = new TextDecoder().decode(archive.read(byteorder.name)).trim();
    if (order !== "little") {
      throw new CheckpointFormatError(`Torch checkpoint byte order "${order}": expected little`);
    }
  }
  const pkl = archive.read(pklName);
  return unpickle(pkl, {
    findGlobal: makeGlobals(),
    persistentLoad(pid) {
      if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length < 5) {
        throw new CheckpointFormatError("Torch persistent id is not a storage tuple");
      }
      const [, type, key, _location, numel] = pid;
      const typeName = storageTypeName(type);
      if (!typeName) {
        throw new CheckpointFormatError(`Torch storage type is not a supported storage class`);
      }
      if (
        typeof key !== "string" || typeof numel !== "number" || !Number.isSafeInteger(numel) ||
        numel < 0
      ) {
        throw new CheckpointFormatError("Torch storage key or element count is malformed");
      }
      const entryName = `${prefix}data/${key}`;
      if (!archive.entries.has(entryName)) {
        throw new CheckpointFormatError(`Torch storage "${entryName}" is missing from the zip`);
      }
      return new StorageRef(archive, entryName, STORAGE_DTYPES[typeName]!, numel);
    },
  });
}

/** Deeper nesting than this is refused (a crafted pickle could otherwise exhaust the stack). */
const MAX_NESTING = 1000;

function materialise(v: unknown, seen: Map<unknown, unknown>, depth = 0): unknown {
  if (v instanceof TorchTensorRef) return v.load();
  if (v === null || typeof v !== "object") return v;
  if (seen.has(v)) return seen.get(v);
  if (depth > MAX_NESTING) {
    throw new CheckpointFormatError(`Torch object graph is nested deeper than ${MAX_NESTING}`);
  }
  if (v instanceof Map) {
    const out = new Map();
    seen.set(v, out);
    for (const [k, x] of v) out.set(k, materialise(x, seen, depth + 1));
    return out;
  }
  if (Array.isArray(v)) {
    const out: unknown[] = [];
    seen.set(v, out);
    for (const x of v) out.push(materialise(x, seen, depth + 1));
    return out;
  }
  return v;
}

/**
 * Unpickles a torch zip checkpoint and loads every tensor.
 *
 * @param bytes The whole `.pt` / `.bin` file.
 * @returns The object graph: dicts as Map, tuples/lists as arrays, tensors as TorchTensor.
 * @throws {CheckpointFormatError} If the file is not a torch zip checkpoint or is corrupt.
 *
 * @example A file that is not a zip archive is rejected
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { CheckpointFormatError, readTorchFile } from "../../mod.ts";
 * throws(() => readTorchFile(new Uint8Array(64)), CheckpointFormatError);
 * ```
 */
export function readTorchFile(bytes: Uint8Array): unknown {
  return materialise(openTorchCheckpoint(bytes), new Map());
}

/**
 * The tensors of a state-dict checkpoint, lazily (nothing is read until `load()`).
 * Accepts a bare state dict or a dict holding one under `"state_dict"`; non-tensor entries are
 * skipped.
 *
 * @param input The file bytes, or a ByteSource over an open file.
 * @returns Tensor references by name, in file order.
 * @throws {CheckpointFormatError} If the checkpoint holds no dict of tensors.
 *
 * @example Only zip checkpoints are state dicts
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { CheckpointFormatError } from "../errors.ts";
 * import { openTorchStateDict } from "./torch.ts";
 * throws(() => openTorchStateDict(new TextEncoder().encode("{}")), CheckpointFormatError);
 * ```
 */
export function openTorchStateDict(input: Uint8Array | ByteSource): Map<string, TorchTensorRef> {
  let root = openTorchCheckpoint(input);
  if (root instanceof Map && root.get("state_dict") instanceof Map) root = root.get("state_dict");
  if (!(root instanceof Map)) {
    throw new CheckpointFormatError("Torch checkpoint is not a state dict (no top-level dict)");
  }
  const out = new Map<string, TorchTensorRef>();
  for (const [k, v] of root) {
    if (typeof k === "string" && v instanceof TorchTensorRef) out.set(k, v);
  }
  if (out.size === 0 && root.size > 0) {
    throw new CheckpointFormatError("Torch checkpoint dict holds no tensors");
  }
  return out;
}

/**
 * Reads a state dict (`torch.save(model.state_dict())`, e.g. `pytorch_model.bin`).
 *
 * @param bytes The whole file.
 * @returns Tensors by name, in file order.
 * @throws {CheckpointFormatError} If the file is corrupt or is not a dict of tensors.
 *
 * @example Corrupt bytes give a typed error
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { CheckpointFormatError, readTorchStateDict } from "../../mod.ts";
 * throws(() => readTorchStateDict(new TextEncoder().encode("PK not really")), CheckpointFormatError);
 * ```
 */
export function readTorchStateDict(bytes: Uint8Array): Map<string, TorchTensor> {
  const out = new Map<string, TorchTensor>();
  for (const [k, ref] of openTorchStateDict(bytes)) out.set(k, ref.load());
  return out;
}

/**
 * Reads a `.pt` file that holds one tensor (`torch.save(tensor)`, e.g. `activation_0.pt`).
 *
 * @param bytes The whole file.
 * @returns The tensor.
 * @throws {CheckpointFormatError} If the file is corrupt or does not hold a single tensor.
 *
 * @example Empty input is rejected
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { CheckpointFormatError, readTorchTensor } from "../../mod.ts";
 * throws(() => readTorchTensor(new Uint8Array(0)), CheckpointFormatError);
 * ```
 */
export function readTorchTensor(bytes: Uint8Array): TorchTensor {
  const root = openTorchCheckpoint(bytes);
  if (!(root instanceof TorchTensorRef)) {
    throw new CheckpointFormatError("Torch file does not hold a single tensor");
  }
  return root.load();
}
