/**
 * Fuzz targets: the parsers that read untrusted files, each with a small corpus of valid inputs.
 * `tasks/fuzz.ts` (and tests/fuzz_test.ts) mutate the corpus and require every case to either
 * parse or throw a {@linkcode PowerInferError} subclass — never another exception, a hang or a
 * huge allocation.
 *
 * Other areas add their parsers here (tokenizer vocab, torch .pt, safetensors...): append an
 * entry to `FUZZ_TARGETS` (or call `registerFuzzTarget`) with a corpus of SMALL valid files
 * (a few KB to a few MB; parsing one should take well under a millisecond) and a `check` that
 * exercises the parse and the accessors a caller would use next.
 *
 * @module
 */

import { fileURLToPath as fromFileUrl } from "node:url";
import { parseGguf } from "../src/gguf/reader.ts";
import { ACTIVATION_PT_FUZZ_TARGET, GPUIDX_FUZZ_TARGET } from "../src/gpu_index/fuzz_targets.ts";
import { CONVERT_FUZZ_TARGETS } from "../src/convert/fuzz_targets.ts";
import { serializeGguf } from "../src/gguf/writer.ts";
import { GgmlType, type GgufKv, GgufValueType } from "../src/gguf/types.ts";

/** A length/count/type field of a valid input, worth overwriting with extreme values. */
export interface FuzzField {
  offset: number;
  width: 4 | 8;
}

/** One valid input to mutate. */
export interface FuzzInput {
  name: string;
  bytes: Uint8Array;
  /** Most mutations land in `[0, focusBytes)` (the header region). */
  focusBytes: number;
  /** Structural fields for targeted corruption (optional). */
  fields?: FuzzField[];
}

/** A parser under fuzz. */
export interface FuzzTarget {
  readonly name: string;
  /** Builds the corpus once (read fixtures, trim them, or synthesize). */
  corpus(): Promise<FuzzInput[]>;
  /** Parses `bytes` and touches what a caller would; must return or throw a PowerInferError. */
  check(bytes: Uint8Array): void;
}

function shared(path: string): string {
  return fromFileUrl(new URL(`../../shared/fixtures/${path}`, import.meta.url));
}

/** Offsets of every count, length, type, dim and offset field of a VALID GGUF file. */
export function ggufFields(bytes: Uint8Array): FuzzField[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fields: FuzzField[] = [{ offset: 4, width: 4 }, { offset: 8, width: 8 }, {
    offset: 16,
    width: 8,
  }];
  const nTensors = Number(dv.getBigUint64(8, true));
  const nKv = Number(dv.getBigUint64(16, true));
  let p = 24;
  const str = (record: boolean) => {
    if (record) fields.push({ offset: p, width: 8 });
    p += 8 + Number(dv.getBigUint64(p, true));
  };
  const SIZES = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];
  for (let i = 0; i < nKv; i++) {
    str(true);
    fields.push({ offset: p, width: 4 });
    const type = dv.getUint32(p, true);
    p += 4;
    if (type === GgufValueType.ARRAY) {
      fields.push({ offset: p, width: 4 }, { offset: p + 4, width: 8 });
      const et = dv.getUint32(p, true);
      const n = Number(dv.getBigUint64(p + 4, true));
      p += 12;
      if (et === GgufValueType.STRING) { for (let j = 0; j < n; j++) str(j < 4 || j === n - 1); }
      else p += n * SIZES[et]!;
    } else if (type === GgufValueType.STRING) {
      str(true);
    } else {
      p += SIZES[type]!;
    }
  }
  for (let i = 0; i < nTensors; i++) {
    str(true);
    fields.push({ offset: p, width: 4 });
    const nDims = dv.getUint32(p, true);
    p += 4;
    for (let d = 0; d < nDims; d++, p += 8) fields.push({ offset: p, width: 8 });
    fields.push({ offset: p, width: 4 }, { offset: p + 4, width: 8 });
    p += 12;
  }
  return fields;
}

/** Re-serializes a fixture with every array cut to `keep` elements and the first `nTensors`. */
async function trimmedFixture(path: string, keep: number, nTensors: number): Promise<Uint8Array> {
  const file = parseGguf(await Deno.readFile(shared(path)));
  const metadata = [...file.metadata.values()].map((kv): GgufKv =>
    kv.type === GgufValueType.ARRAY ? { ...kv, value: kv.value.slice(0, keep) } : kv
  );
  return serializeGguf({
    magic: file.magic,
    version: file.version,
    metadata,
    tensors: file.tensors.slice(0, nTensors).map((t) => ({ ...t, data: () => file.tensorData(t) })),
  });
}

function ggufInput(name: string, bytes: Uint8Array): FuzzInput {
  const file = parseGguf(bytes);
  const focusBytes = Math.min(bytes.length, file.tensors.length > 0 ? file.dataOffset + 64 : 1e9);
  return { name, bytes, focusBytes, fields: ggufFields(bytes) };
}

const T = GgufValueType;

/** GGUF/PWRI reader: fixtures (trimmed to small sizes) plus synthetic files of every kind. */
export const GGUF_FUZZ_TARGET: FuzzTarget = {
  name: "gguf",
  async corpus() {
    const everyType = await serializeGguf({
      magic: "GGUF",
      metadata: [
        { key: "general.architecture", type: T.STRING, value: "llama" },
        { key: "u8", type: T.UINT8, value: 1 },
        { key: "i8", type: T.INT8, value: -1 },
        { key: "u16", type: T.UINT16, value: 2 },
        { key: "i16", type: T.INT16, value: -2 },
        { key: "u32", type: T.UINT32, value: 3 },
        { key: "i32", type: T.INT32, value: -3 },
        { key: "f32", type: T.FLOAT32, value: 0.5 },
        { key: "bool", type: T.BOOL, value: true },
        { key: "u64", type: T.UINT64, value: 4n },
        { key: "i64", type: T.INT64, value: -4n },
        { key: "f64", type: T.FLOAT64, value: 0.25 },
        { key: "s", type: T.ARRAY, elementType: T.STRING, value: ["a", "é", "🦙"] },
        { key: "f", type: T.ARRAY, elementType: T.FLOAT32, value: [1, 2, 3] },
        { key: "b", type: T.ARRAY, elementType: T.BOOL, value: [true, false] },
        { key: "e", type: T.ARRAY, elementType: T.UINT64, value: [] },
      ],
      tensors: [
        { name: "q", type: GgmlType.Q4_0, ne: [32, 2], data: () => new Uint8Array(36) },
        { name: "f", type: GgmlType.F16, ne: [3, 1, 2], data: () => new Uint8Array(12) },
        { name: "e", type: GgmlType.I32, ne: [0], data: () => new Uint8Array(0) },
        { name: "k", type: GgmlType.Q6_K, ne: [256], data: () => new Uint8Array(210) },
      ],
    });
    const gpuIndex = await serializeGguf({
      magic: "PWRI",
      metadata: [
        { key: "general.architecture", type: T.STRING, value: "generic.gpu_index" },
        { key: "generic.gpu_index.block_count", type: T.UINT32, value: 2 },
        { key: "split.vram_capacity", type: T.UINT64, value: 1024n },
      ],
      tensors: [0, 1].flatMap((i) => [
        { name: `blk.${i}.gpu_idx`, type: GgmlType.I32, ne: [64], data: () => new Uint8Array(256) },
        {
          name: `blk.${i}.gpu_bucket`,
          type: GgmlType.I32,
          ne: [i],
          data: () => new Uint8Array(4 * i),
        },
      ]),
    });
    return [
      ggufInput("every-type", everyType),
      ggufInput("gpu-index", gpuIndex),
      ggufInput("vocab-llama(trimmed)", await trimmedFixture("vocab/ggml-vocab-llama.gguf", 64, 0)),
      ggufInput(
        "vocab-falcon(trimmed)",
        await trimmedFixture("vocab/ggml-vocab-falcon.gguf", 64, 0),
      ),
      ggufInput(
        "tiny.q4_0(trimmed)",
        await trimmedFixture("models/tiny/tiny.powerinfer.q4_0.gguf", 64, 12),
      ),
      ggufInput(
        "falcon-tiny(trimmed)",
        await trimmedFixture("models/falcon-tiny/falcon-tiny.powerinfer.q4_0.gguf", 64, 10),
      ),
      ggufInput(
        "fortune-relu.q4",
        await Deno.readFile(shared("fortune-relu/fortune-relu.q4.powerinfer.gguf")),
      ),
    ];
  },
  check(bytes) {
    const file = parseGguf(bytes);
    for (const t of file.tensors) {
      if (file.tensorData(t).length !== t.byteLength) {
        throw new Error(`tensorData("${t.name}") has the wrong length`);
      }
    }
    for (const kv of file.metadata.values()) {
      if (kv.type === GgufValueType.ARRAY) file.getArray(kv.key);
    }
    file.close();
  },
};

/** Every registered target; append yours. */
export const FUZZ_TARGETS: FuzzTarget[] = [
  GGUF_FUZZ_TARGET,
  ACTIVATION_PT_FUZZ_TARGET,
  GPUIDX_FUZZ_TARGET,
  ...CONVERT_FUZZ_TARGETS,
];

/** Adds a target (for modules that prefer registering from their own file). */
export function registerFuzzTarget(target: FuzzTarget): void {
  if (FUZZ_TARGETS.some((t) => t.name === target.name)) {
    throw new RangeError(`Duplicate fuzz target "${target.name}"`);
  }
  FUZZ_TARGETS.push(target);
}
