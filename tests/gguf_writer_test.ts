// GGUF writer: round trips of every value type and tensor bytes, pinned bytes, fixture re-writes.
import { deepStrictEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { GgmlType, type GgufKv, type GgufMagic, GgufValueType } from "../src/gguf/types.ts";
import { parseGguf } from "../src/gguf/reader.ts";
import { type GgufWriteSpec, layoutGguf, serializeGguf, writeGguf } from "../src/gguf/writer.ts";
import { seededRandom, sharedFixture } from "./_helpers.ts";
import { FileWriteError } from "../src/errors.ts";

const T = GgufValueType;

/** One key of every scalar type, an array of every scalar type, empty arrays, unicode. */
function everyKind(): GgufKv[] {
  const kvs: GgufKv[] = [
    { key: "u8", type: T.UINT8, value: 255 },
    { key: "i8", type: T.INT8, value: -128 },
    { key: "u16", type: T.UINT16, value: 65535 },
    { key: "i16", type: T.INT16, value: -32768 },
    { key: "u32", type: T.UINT32, value: 4294967295 },
    { key: "i32", type: T.INT32, value: -2147483648 },
    { key: "f32", type: T.FLOAT32, value: Math.fround(-1.5e-7) },
    { key: "bool", type: T.BOOL, value: true },
    { key: "str", type: T.STRING, value: "héllo, 世界 🦙 \uFEFF\u0000end" },
    { key: "empty.str", type: T.STRING, value: "" },
    { key: "u64", type: T.UINT64, value: 0xffffffffffffffffn },
    { key: "i64", type: T.INT64, value: -0x8000000000000000n },
    { key: "f64", type: T.FLOAT64, value: Math.PI },
    { key: "ключ.🔑", type: T.STRING, value: "unicode key" },
  ];
  const arrays: [GgufValueType, GgufKv["value"]][] = [
    [T.UINT8, [0, 1, 255]],
    [T.INT8, [-128, 0, 127]],
    [T.UINT16, [0, 65535]],
    [T.INT16, [-32768, 32767]],
    [T.UINT32, [0, 4294967295]],
    [T.INT32, [-2147483648, 2147483647]],
    [T.FLOAT32, [0, -0, 1.5, Infinity, -Infinity, Math.fround(0.1)]],
    [T.BOOL, [true, false, true]],
    [T.STRING, ["<unk>", "", "▁the", "🦙", "\uFEFF", "a".repeat(300)]],
    [T.UINT64, [0n, 2n ** 64n - 1n]],
    [T.INT64, [-(2n ** 63n), 2n ** 63n - 1n]],
    [T.FLOAT64, [Number.MIN_VALUE, -Number.MAX_VALUE, 1e300]],
  ];
  for (const [elementType, value] of arrays) {
    const name = GgufValueType[elementType].toLowerCase();
    kvs.push({ key: `arr.${name}`, type: T.ARRAY, elementType, value } as GgufKv);
    kvs.push({ key: `empty.${name}`, type: T.ARRAY, elementType, value: [] } as GgufKv);
  }
  return kvs;
}

function randomBytes(n: number, seed: number): Uint8Array {
  const rand = seededRandom(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
}

function specWith(magic: GgufMagic, version = 3): GgufWriteSpec {
  const shapes: [string, GgmlType, number[]][] = [
    ["f32.vec", GgmlType.F32, [7]],
    ["f16.mat", GgmlType.F16, [3, 5]],
    ["q4_0", GgmlType.Q4_0, [64, 2]],
    ["q8_0", GgmlType.Q8_0, [32, 3, 1, 1]],
    ["q6_k", GgmlType.Q6_K, [256]],
    ["q5_0", GgmlType.Q5_0, [32, 2, 2]],
    ["i32.empty", GgmlType.I32, [0]],
    ["i8", GgmlType.I8, [5, 1, 3, 2]],
    ["i16", GgmlType.I16, [9]],
    ["i32", GgmlType.I32, [33]],
  ];
  const sizes: Record<string, number> = {
    "f32.vec": 28,
    "f16.mat": 30,
    q4_0: 72,
    q8_0: 102,
    q6_k: 210,
    q5_0: 88,
    "i32.empty": 0,
    i8: 30,
    i16: 18,
    i32: 132,
  };
  return {
    magic,
    version,
    metadata: everyKind(),
    tensors: shapes.map(([name, type, ne], i) => ({
      name,
      type,
      ne,
      data: () => randomBytes(sizes[name]!, i + 1),
    })),
  };
}

for (const [magic, version] of [["GGUF", 3], ["PWRI", 3], ["GGUF", 2]] as const) {
  Deno.test(`serializeGguf() round-trips every key type and tensor byte (${magic} v${version})`, async () => {
    const spec = specWith(magic, version);
    const file = parseGguf(await serializeGguf(spec));
    equal(file.magic, magic);
    equal(file.kind, magic === "GGUF" ? "gguf" : "powerinfer-model");
    equal(file.version, version);
    deepStrictEqual([...file.metadata.values()], spec.metadata);
    equal(file.tensors.length, spec.tensors.length);
    for (const t of spec.tensors) {
      const info = file.tensor(t.name)!;
      equal(info.type, t.type);
      deepStrictEqual(info.ne, t.ne);
      equal(info.offsetBytes % 32, 0);
      deepStrictEqual(file.tensorData(t.name), await t.data());
    }
  });
}

Deno.test("serializeGguf() pins the byte layout of a small file", async () => {
  const bytes = await serializeGguf({
    magic: "PWRI",
    metadata: [
      { key: "ab", type: T.UINT16, value: 0x0102 },
      { key: "s", type: T.ARRAY, elementType: T.STRING, value: ["x", "é"] },
    ],
    tensors: [{ name: "t", type: GgmlType.F16, ne: [2], data: () => Uint8Array.of(1, 2, 3, 4) }],
  });
  // deno-fmt-ignore
  const expected = [
    0x50, 0x57, 0x52, 0x49, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, // header
    2, 0, 0, 0, 0, 0, 0, 0, 0x61, 0x62, 2, 0, 0, 0, 0x02, 0x01, // "ab" UINT16 0x0102
    1, 0, 0, 0, 0, 0, 0, 0, 0x73, 9, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, // "s" ARRAY STRING 2
    1, 0, 0, 0, 0, 0, 0, 0, 0x78, 2, 0, 0, 0, 0, 0, 0, 0, 0xc3, 0xa9, // "x", "é"
    1, 0, 0, 0, 0, 0, 0, 0, 0x74, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, // "t" 1 dim [2] F16
    0, 0, 0, 0, 0, 0, 0, 0, // offset 0
  ];
  while (expected.length % 32 !== 0) expected.push(0);
  expected.push(1, 2, 3, 4);
  while (expected.length % 32 !== 0) expected.push(0);
  deepStrictEqual([...bytes], expected);
});

Deno.test("serializeGguf() writes no padding after the KVs of a file without tensors", async () => {
  const bytes = await serializeGguf({
    metadata: [{ key: "a", type: T.BOOL, value: false }],
    tensors: [],
  });
  equal(bytes.length, 24 + 9 + 4 + 1);
});

Deno.test("serializeGguf() with alignment 64 adds general.alignment and aligns tensors", async () => {
  const file = parseGguf(
    await serializeGguf({
      alignment: 64,
      metadata: [],
      tensors: [
        { name: "a", type: GgmlType.F32, ne: [3], data: () => new Uint8Array(12) },
        { name: "b", type: GgmlType.F32, ne: [3], data: () => new Uint8Array(12) },
      ],
    }),
  );
  equal(file.alignment, 64);
  equal(file.getU32("general.alignment"), 64);
  equal(file.dataOffset % 64, 0);
  equal(file.tensor("b")?.offsetBytes, 64);
});

Deno.test("writeGguf() streams providers once each, in order, and reports progress", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/out.gguf`;
    const calls: string[] = [];
    const progress: number[][] = [];
    const spec = specWith("PWRI");
    const tracked: GgufWriteSpec = {
      ...spec,
      tensors: spec.tensors.map((t) => ({
        ...t,
        data: async () => {
          calls.push(t.name);
          await Promise.resolve();
          return t.data();
        },
      })),
    };
    await writeGguf(path, tracked, { onProgress: (...a) => progress.push(a) });
    deepStrictEqual(calls, spec.tensors.map((t) => t.name));
    const bytes = await Deno.readFile(path);
    deepStrictEqual(bytes, await serializeGguf(spec));
    equal(progress.length, spec.tensors.length);
    deepStrictEqual(progress.at(-1), [10, 10, bytes.length, bytes.length]);
    deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["out.gguf"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeGguf() leaves the destination untouched and no temp file on failure", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/out.gguf`;
    await Deno.writeTextFile(path, "old");
    await rejects(
      writeGguf(path, {
        metadata: [],
        tensors: [{ name: "w", type: GgmlType.F32, ne: [4], data: () => new Uint8Array(15) }],
      }),
      /Bad data of tensor "w": expected 16 bytes, found 15/,
    );
    equal(await Deno.readTextFile(path), "old");
    deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["out.gguf"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("layoutGguf() rejects invalid specs", () => {
  const w = (ne: number[], type = GgmlType.F32) => ({
    name: "w",
    type,
    ne,
    data: () => new Uint8Array(),
  });
  throws(
    () => layoutGguf({ metadata: [], tensors: [w([4]), w([4])] }),
    /Duplicate tensor name "w"/,
  );
  throws(
    () =>
      layoutGguf({
        metadata: [{ key: "a", type: T.UINT8, value: 1 }, { key: "a", type: T.UINT8, value: 2 }],
        tensors: [],
      }),
    /Duplicate metadata key "a"/,
  );
  throws(() => layoutGguf({ metadata: [], tensors: [w([16], GgmlType.Q4_0)] }), /block size 32/);
  throws(() => layoutGguf({ metadata: [], tensors: [w([])] }), /expected 1..4, found 0/);
  throws(() => layoutGguf({ metadata: [], tensors: [w([1, 1, 1, 1, 1])] }), /found 5/);
  throws(
    () => layoutGguf({ metadata: [], tensors: [w([4], 5 as GgmlType)] }),
    /Unknown ggml type 5/,
  );
  throws(
    () => layoutGguf({ metadata: [{ key: "a", type: T.UINT8, value: 256 }], tensors: [] }),
    /expected an integer in 0..255, found 256/,
  );
  throws(
    () => layoutGguf({ metadata: [{ key: "a", type: T.UINT64, value: -1n }], tensors: [] }),
    RangeError,
  );
  throws(
    () => layoutGguf({ metadata: [{ key: "a", type: T.STRING, value: 1 }], tensors: [] }),
    TypeError,
  );
  throws(() => layoutGguf({ version: 1, metadata: [], tensors: [] }), /version 1/);
  throws(() => layoutGguf({ alignment: 48, metadata: [], tensors: [] }), /power of two/);
});

// Re-serializing a fixture (metadata and tensors carried over) reproduces it byte for byte: both
// gguf-py (converters) and ggml (quantize) pad every tensor, the last included, to the alignment,
// and a tensor-less vocab file ends right after its KVs.
const REWRITE_FIXTURES = [
  "vocab/ggml-vocab-llama.gguf",
  "vocab/ggml-vocab-falcon.gguf",
  "models/tiny/tiny.powerinfer.f16.gguf",
  "models/tiny/tiny.powerinfer.q4_0.gguf",
  "models/tiny/tiny.dense.f16.gguf",
  "models/falcon-tiny/falcon-tiny.powerinfer.q4_0.gguf",
  "fortune-relu/fortune-relu.powerinfer.gguf",
  "fortune-relu/fortune-relu.q4.powerinfer.gguf",
];
for (const name of REWRITE_FIXTURES) {
  Deno.test(`serializeGguf() reproduces ${name} byte for byte`, async () => {
    const bytes = await Deno.readFile(sharedFixture(name));
    const file = parseGguf(bytes);
    const out = await serializeGguf({
      magic: file.magic,
      version: file.version,
      metadata: [...file.metadata.values()],
      tensors: file.tensors.map((t) => ({ ...t, data: () => file.tensorData(t) })),
    });
    equal(out.length, bytes.length);
    const firstDiff = out.findIndex((b, i) => b !== bytes[i]);
    equal(firstDiff, -1, `first differing byte at ${firstDiff}`);
  });
}

Deno.test("writeGguf() rewrites the tiny f32 model through the streaming path", async () => {
  const bytes = await Deno.readFile(sharedFixture("models/tiny/tiny.powerinfer.f32.gguf"));
  const file = parseGguf(bytes);
  const path = await Deno.makeTempFile({ suffix: ".gguf" });
  try {
    await writeGguf(path, {
      magic: file.magic,
      metadata: [...file.metadata.values()],
      tensors: file.tensors.map((t) => ({ ...t, data: () => file.tensorData(t) })),
    });
    const out = await Deno.readFile(path);
    ok(out.length === bytes.length && out.every((b, i) => b === bytes[i]));
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("writeGguf() refuses a missing directory or a directory path before any provider runs", async () => {
  const dir = Deno.makeTempDirSync();
  let called = 0;
  const spec = {
    metadata: [],
    tensors: [{
      name: "w",
      type: GgmlType.F32,
      ne: [2],
      data: () => (called++, new Uint8Array(8)),
    }],
  };
  try {
    await rejects(
      writeGguf(`${dir}/missing/out.gguf`, spec),
      (e: Error) =>
        e instanceof FileWriteError && /directory ".*missing" does not exist/.test(e.message),
    );
    await rejects(
      writeGguf(dir, spec),
      (e: Error) => e instanceof FileWriteError && /it is a directory/.test(e.message),
    );
    equal(called, 0);
    deepStrictEqual([...Deno.readDirSync(dir)], []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
