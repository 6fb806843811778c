// GGUF reader: every shared fixture, concrete values, hand-written layouts and every validation.
import { deepStrictEqual, equal, match, ok, throws } from "node:assert/strict";
import { GgufFormatError, MappedFileError, ModelConfigError } from "../src/errors.ts";
import { GgmlType, GgufValueType } from "../src/gguf/types.ts";
import { parseGguf, parseGgufSource } from "../src/gguf/reader.ts";
import { layoutGguf } from "../src/gguf/writer.ts";
import { openGguf } from "../src/gguf/open.ts";
import { sharedFixture } from "./_helpers.ts";

const FIXTURE_FILES = [
  "vocab/ggml-vocab-llama.gguf",
  "vocab/ggml-vocab-falcon.gguf",
  "models/tiny/tiny.powerinfer.f16.gguf",
  "models/tiny/tiny.powerinfer.f32.gguf",
  "models/tiny/tiny.powerinfer.q4_0.gguf",
  "models/tiny/tiny.dense.f16.gguf",
  "models/falcon-tiny/falcon-tiny.powerinfer.q4_0.gguf",
  "fortune-relu/fortune-relu.powerinfer.gguf",
  "fortune-relu/fortune-relu.q4.powerinfer.gguf",
];

/** Every .gguf under shared/fixtures, so a fixture added later is read too. */
function allSharedGguf(): string[] {
  const root = sharedFixture("");
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(`${root}${dir}`)) {
      const rel = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory) walk(rel);
      else if (e.name.endsWith(".gguf")) out.push(rel);
    }
  };
  walk("");
  return out.sort();
}

Deno.test("fixture list covers every .gguf in shared/fixtures", () => {
  deepStrictEqual(allSharedGguf(), [...FIXTURE_FILES].sort());
});

for (const name of allSharedGguf()) {
  Deno.test(`openGguf() reads ${name} consistently with parseGguf()`, () => {
    const bytes = Deno.readFileSync(sharedFixture(name));
    const parsed = parseGguf(bytes);
    using opened = openGguf(sharedFixture(name));
    equal(opened.magic, parsed.magic);
    equal(opened.kind, parsed.kind);
    equal(opened.dataOffset, parsed.dataOffset);
    deepStrictEqual([...opened.metadata.keys()], [...parsed.metadata.keys()]);
    deepStrictEqual(opened.tensors, parsed.tensors);
    // Tensors tile the data section in order: each at the running sum of padded sizes.
    let expected = 0;
    for (const t of parsed.tensors) {
      equal(t.offsetBytes, expected, t.name);
      expected += Math.ceil(t.byteLength / 32) * 32;
    }
    if (parsed.tensors.length > 0) equal(parsed.dataOffset + expected, bytes.length);
    for (const t of parsed.tensors.slice(0, 3)) {
      deepStrictEqual(opened.tensorData(t), parsed.tensorData(t.name));
    }
  });
}

Deno.test("parseGguf() reads the tiny PowerInfer f16 model's header, keys and tensors", () => {
  const file = parseGguf(Deno.readFileSync(sharedFixture("models/tiny/tiny.powerinfer.f16.gguf")));
  equal(file.magic, "PWRI");
  equal(file.kind, "powerinfer-model");
  equal(file.version, 3);
  equal(file.alignment, 32);
  equal(file.metadata.size, 20);
  equal(file.tensors.length, 25);
  equal(file.getString("general.architecture"), "llama");
  equal(file.getU32("llama.embedding_length"), 64);
  equal(file.getU32("llama.feed_forward_length"), 1024);
  equal(file.getU32("llama.block_count"), 2);
  equal(file.getF32("powerinfer.sparse_threshold"), 0);
  equal(file.getF32("llama.attention.layer_norm_rms_epsilon"), Math.fround(1e-6));
  const tokens = file.getArray("tokenizer.ggml.tokens")!;
  equal(tokens.length, 32000);
  deepStrictEqual(tokens.slice(0, 4), ["<unk>", "<s>", "</s>", "<0x00>"]);
  const down = file.tensor("blk.0.ffn_down_t.weight")!;
  equal(down.type, GgmlType.F16);
  deepStrictEqual(down.ne, [64, 1024]);
  equal(down.byteLength, 64 * 1024 * 2);
  equal(file.tensorData(down).length, 64 * 1024 * 2);
  deepStrictEqual(file.tensor("blk.1.fc1.weight")?.ne, [64, 32]);
  equal(file.tensor("blk.0.attn_norm.weight")?.type, GgmlType.F32);
  equal(file.tensor("blk.0.ffn_down.weight"), undefined);
});

Deno.test("parseGguf() reads the tiny Q4_0 model with a Q8_0 output.weight", () => {
  const file = parseGguf(
    Deno.readFileSync(sharedFixture("models/tiny/tiny.powerinfer.q4_0.gguf")),
  );
  equal(file.kind, "powerinfer-model");
  equal(file.getU32("general.file_type"), 2);
  equal(file.getU32("general.quantization_version"), 2);
  const up = file.tensor("blk.0.ffn_up.weight")!;
  equal(up.type, GgmlType.Q4_0);
  equal(up.byteLength, (64 * 1024 / 32) * 18);
  equal(file.tensor("output.weight")?.type, GgmlType.Q8_0);
  equal(file.tensor("output.weight")?.byteLength, (64 * 32000 / 32) * 34);
});

Deno.test("parseGguf() reads the dense tiny model as kind gguf with ffn_down", () => {
  const file = parseGguf(Deno.readFileSync(sharedFixture("models/tiny/tiny.dense.f16.gguf")));
  equal(file.magic, "GGUF");
  equal(file.kind, "gguf");
  deepStrictEqual(file.tensor("blk.0.ffn_down.weight")?.ne, [1024, 64]);
  equal(file.tensor("blk.0.fc1.weight"), undefined);
});

Deno.test("parseGguf() reads the vocab files as v3 (llama) and v2 (falcon)", () => {
  const llama = parseGguf(Deno.readFileSync(sharedFixture("vocab/ggml-vocab-llama.gguf")));
  equal(llama.version, 3);
  equal(llama.kind, "gguf");
  equal(llama.tensors.length, 0);
  equal(llama.metadata.size, 17);
  equal(llama.getString("tokenizer.ggml.model"), "llama");
  equal(llama.getArray("tokenizer.ggml.scores")?.length, 32000);
  equal(llama.get("tokenizer.ggml.scores")?.type, GgufValueType.ARRAY);
  // A token that is exactly U+FEFF must survive decoding (no BOM stripping).
  ok(llama.getArray("tokenizer.ggml.tokens")!.includes("\uFEFF"));
  const falcon = parseGguf(Deno.readFileSync(sharedFixture("vocab/ggml-vocab-falcon.gguf")));
  equal(falcon.version, 2);
  equal(falcon.getString("tokenizer.ggml.model"), "gpt2");
  equal(falcon.getArray("tokenizer.ggml.tokens")?.length, 65024);
  equal(falcon.getArray("tokenizer.ggml.merges")?.length, 64784);
  equal(falcon.getU32("falcon.attention.head_count"), 71);
});

Deno.test("parseGguf() reads the falcon-tiny and fortune-relu models", () => {
  const falcon = parseGguf(
    Deno.readFileSync(sharedFixture("models/falcon-tiny/falcon-tiny.powerinfer.q4_0.gguf")),
  );
  equal(falcon.kind, "powerinfer-model");
  equal(falcon.getString("general.architecture"), "falcon");
  equal(falcon.getU32("falcon.embedding_length"), 256);
  equal(falcon.getU32("falcon.attention.head_count_kv"), 2);
  equal(falcon.tensors[0]?.name, "blk.0.fc1.weight");
  deepStrictEqual(falcon.tensor("blk.0.attn_qkv.weight")?.ne, [256, 384]);
  equal(falcon.tensor("output.weight")?.type, GgmlType.Q8_0);
  const fortune = parseGguf(
    Deno.readFileSync(sharedFixture("fortune-relu/fortune-relu.powerinfer.gguf")),
  );
  equal(fortune.kind, "powerinfer-model");
  equal(fortune.getU32("llama.embedding_length"), 192);
  equal(fortune.getU32("llama.attention.head_count_kv"), 2);
  equal(fortune.tensors.length, 47);
  deepStrictEqual(fortune.tensor("blk.3.ffn_down_t.weight")?.ne, [192, 1024]);
});

Deno.test("GgufFile typed getters throw ModelConfigError on another type", () => {
  const file = parseGguf(Deno.readFileSync(sharedFixture("vocab/ggml-vocab-llama.gguf")));
  throws(() => file.getF32("llama.embedding_length"), ModelConfigError);
  throws(() => file.getString("tokenizer.ggml.tokens"), /ARRAY of STRING: expected STRING/);
  throws(() => file.getArray("general.name"), ModelConfigError);
  equal(file.getU32("no.such.key"), undefined);
  throws(() => file.tensorData("missing.weight"), /Tensor "missing.weight" is missing/);
});

Deno.test("openGguf() tensorData after close throws", () => {
  const file = openGguf(sharedFixture("fortune-relu/fortune-relu.q4.powerinfer.gguf"));
  const view = file.tensorData("output_norm.weight");
  equal(view.length, 768);
  file.close();
  file.close();
  equal(view.length, 0); // detached with the mapping, never dangling
  throws(() => file.tensorData("output_norm.weight"), GgufFormatError);
});

Deno.test("openGguf() throws MappedFileError for a missing file", () => {
  throws(() => openGguf("/nonexistent/model.gguf"), MappedFileError);
});

// ---------------------------------------------------------------------------------------------
// Hand-written bytes.

/** Minimal little-endian byte writer that can write invalid files on purpose. */
class Raw {
  bytes: number[] = [];
  u8(...v: number[]): this {
    this.bytes.push(...v);
    return this;
  }
  u32(v: number): this {
    return this.u8(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);
  }
  u64(v: number | bigint): this {
    const b = BigInt(v);
    return this.u32(Number(b & 0xffffffffn)).u32(Number(b >> 32n));
  }
  str(s: string): this {
    const e = new TextEncoder().encode(s);
    return this.u64(e.length).u8(...e);
  }
  pad(to: number): this {
    while (this.bytes.length % to !== 0) this.bytes.push(0);
    return this;
  }
  zeros(n: number): this {
    for (let i = 0; i < n; i++) this.bytes.push(0);
    return this;
  }
  get length(): number {
    return this.bytes.length;
  }
  build(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

const GGUF = [0x47, 0x47, 0x55, 0x46];
const PWRI = [0x50, 0x57, 0x52, 0x49];

function header(nTensors: number, nKv: number, magic = GGUF, version = 3): Raw {
  return new Raw().u8(...magic).u32(version).u64(nTensors).u64(nKv);
}

/** One F32 tensor "w" ne=[4] with an arbitrary KV; the base for many corruptions. */
function oneTensorFile(
  opts: { ne?: number[]; type?: number; offset?: number; dataBytes?: number } = {},
): Uint8Array {
  const r = header(1, 1).str("general.architecture").u32(GgufValueType.STRING).str("llama");
  const ne = opts.ne ?? [4];
  r.str("w").u32(ne.length);
  for (const d of ne) r.u64(d);
  r.u32(opts.type ?? GgmlType.F32).u64(opts.offset ?? 0).pad(32);
  return r.zeros(opts.dataBytes ?? 32).build();
}

Deno.test("parseGguf() reads a hand-written PWRI header byte for byte", () => {
  const r = header(2, 2, PWRI)
    .str("general.architecture").u32(GgufValueType.STRING).str("llama")
    .str("n").u32(GgufValueType.ARRAY).u32(GgufValueType.INT16).u64(2).u8(0xff, 0xff, 2, 0)
    .str("a").u32(1).u64(32).u32(GgmlType.Q4_0).u64(0)
    .str("b").u32(2).u64(2).u64(3).u32(GgmlType.I32).u64(32);
  const infoEnd = r.length;
  r.pad(32);
  const dataOffset = r.length;
  r.u8(...Array.from({ length: 18 }, (_, i) => i + 1)).pad(32);
  r.u8(...Array.from({ length: 24 }, (_, i) => 100 + i)).pad(32);
  const file = parseGguf(r.build());
  ok(dataOffset > infoEnd);
  equal(file.magic, "PWRI");
  equal(file.kind, "powerinfer-model");
  equal(file.dataOffset, dataOffset);
  deepStrictEqual(file.get("n"), {
    key: "n",
    type: GgufValueType.ARRAY,
    elementType: GgufValueType.INT16,
    value: [-1, 2],
  });
  deepStrictEqual(file.tensors, [
    { name: "a", type: GgmlType.Q4_0, ne: [32], offsetBytes: 0, byteLength: 18 },
    { name: "b", type: GgmlType.I32, ne: [2, 3], offsetBytes: 32, byteLength: 24 },
  ]);
  deepStrictEqual([...file.tensorData("a")], Array.from({ length: 18 }, (_, i) => i + 1));
  deepStrictEqual([...file.tensorData("b")], Array.from({ length: 24 }, (_, i) => 100 + i));
});

Deno.test("parseGguf() detects the GPU-index kind from PWRI + generic.gpu_index", () => {
  const bytes = header(0, 1, PWRI).str("general.architecture").u32(GgufValueType.STRING)
    .str("generic.gpu_index").build();
  equal(parseGguf(bytes).kind, "powerinfer-gpu-index");
  bytes.set(GGUF, 0);
  equal(parseGguf(bytes).kind, "gguf");
});

Deno.test("parseGguf() honours general.alignment", () => {
  const r = header(2, 1).str("general.alignment").u32(GgufValueType.UINT32).u32(64)
    .str("a").u32(1).u64(4).u32(GgmlType.F32).u64(0)
    .str("b").u32(1).u64(4).u32(GgmlType.F32).u64(64).pad(64).zeros(80);
  const file = parseGguf(r.build());
  equal(file.alignment, 64);
  equal(file.dataOffset % 64, 0);
  equal(file.tensor("b")?.offsetBytes, 64);
});

/** Asserts a GgufFormatError whose message matches `re`, at byte `offset` when given. */
function rejects(bytes: Uint8Array, re: RegExp, offset?: number): void {
  throws(() => parseGguf(bytes), (e: unknown) => {
    ok(e instanceof GgufFormatError, `expected GgufFormatError, got ${e}`);
    match(e.message, re);
    if (offset !== undefined) equal(e.offset, offset, e.message);
    return true;
  });
}

Deno.test("parseGguf() rejects a bad magic", () => {
  rejects(new Uint8Array(32), /Bad magic: expected "GGUF" or "PWRI", found 00 00 00 00/, 0);
  rejects(new Uint8Array([0x47, 0x47]), /Truncated magic/, 0);
});

Deno.test("parseGguf() rejects versions 0, 1 and 4", () => {
  for (const v of [0, 1, 4, 0xffffffff]) {
    rejects(header(0, 0, GGUF, v).build(), new RegExp(`Unsupported GGUF version ${v}`), 4);
  }
  equal(parseGguf(header(0, 0, GGUF, 2).build()).version, 2);
});

Deno.test("parseGguf() rejects every truncation of a valid file", () => {
  const bytes = oneTensorFile();
  // The 16 payload bytes end at 144; the padding after the last tensor is optional.
  equal(parseGguf(bytes.subarray(0, 144)).tensorData("w").length, 16);
  for (let n = 0; n < 144; n++) {
    rejects(bytes.subarray(0, n), /Truncated|Absurd/);
  }
});

Deno.test("parseGguf() rejects absurd counts and lengths before allocating", () => {
  rejects(header(0, 2 ** 40).build(), /Absurd metadata count 1099511627776/, 16);
  rejects(header(2 ** 40, 0).build(), /Absurd tensor count/, 8);
  rejects(
    header(0, 1).u64(2n ** 63n).zeros(16).build(),
    /Absurd metadata key length: expected at most 2\^53 - 1/,
    24,
  );
  rejects(header(0, 1).u64(1000).zeros(16).build(), /Absurd metadata key length: .* found 1000/);
  rejects(
    header(0, 1).str("a").u32(GgufValueType.ARRAY).u32(GgufValueType.UINT32).u64(2 ** 50).build(),
    /Absurd array count of key "a"/,
    41,
  );
  rejects(
    header(0, 1).str("a").u32(GgufValueType.ARRAY).u32(GgufValueType.STRING).u64(1000).u64(0)
      .build(),
    /Absurd array count/,
  );
});

Deno.test("parseGguf() rejects unknown value types and arrays of arrays", () => {
  rejects(header(0, 1).str("a").u32(13).u32(0).build(), /Unknown value type 13 of key "a"/, 33);
  rejects(
    header(0, 1).str("a").u32(GgufValueType.ARRAY).u32(GgufValueType.ARRAY).u64(0).build(),
    /Array of arrays in key "a"/,
    37,
  );
  rejects(
    header(0, 1).str("a").u32(GgufValueType.ARRAY).u32(99).u64(0).build(),
    /Unknown value type 99/,
  );
});

Deno.test("parseGguf() rejects bad BOOL bytes and invalid UTF-8", () => {
  rejects(header(0, 1).str("a").u32(GgufValueType.BOOL).u8(2).build(), /Bad BOOL .* found 2/);
  rejects(header(0, 1).u64(2).u8(0xc3, 0x28).u32(0).u8(0).build(), /Invalid UTF-8/, 24);
  rejects(
    header(0, 1).str("a").u32(GgufValueType.STRING).u64(3).u8(0xed, 0xa0, 0x80).build(),
    /Invalid UTF-8 in key "a"/,
  );
});

Deno.test("parseGguf() rejects duplicate keys and tensor names", () => {
  rejects(
    header(0, 2).str("a").u32(0).u8(1).str("a").u32(0).u8(2).build(),
    /Duplicate metadata key "a"/,
    38,
  );
  const r = header(2, 0).str("w").u32(1).u64(4).u32(0).u64(0)
    .str("w").u32(1).u64(4).u32(0).u64(32).pad(32).zeros(64);
  rejects(r.build(), /Duplicate tensor name "w"/);
});

Deno.test("parseGguf() rejects n_dims outside 1..4 and unknown ggml types", () => {
  rejects(oneTensorFile({ ne: [] }), /Bad n_dims of tensor "w": expected 1..4, found 0/);
  rejects(oneTensorFile({ ne: [1, 1, 1, 1, 4] }), /found 5/);
  rejects(oneTensorFile({ type: 4 }), /Unknown ggml type 4 of tensor "w"/);
  rejects(oneTensorFile({ type: 19 }), /Unknown ggml type 19/);
});

Deno.test("parseGguf() rejects a row length that is not a multiple of the block", () => {
  rejects(
    oneTensorFile({ ne: [16, 2], type: GgmlType.Q4_0 }),
    /row length 16 of a Q4_0 tensor is not a multiple of its block size 32/,
  );
  rejects(oneTensorFile({ ne: [2 ** 40, 2 ** 20] }), /Absurd shape/);
});

Deno.test("parseGguf() rejects misaligned, out-of-bounds and overlapping tensors", () => {
  rejects(oneTensorFile({ offset: 4 }), /Misaligned offset of tensor "w": .* found 4/);
  rejects(oneTensorFile({ ne: [16] }), /Truncated tensor data of "w": expected 64 bytes/, 128);
  rejects(oneTensorFile({ offset: 32 }), /Truncated tensor data of "w"/);
  const r = header(2, 0).str("a").u32(1).u64(16).u32(0).u64(0)
    .str("b").u32(1).u64(4).u32(0).u64(32).pad(32).zeros(64);
  rejects(r.build(), /Overlapping tensors "a" and "b"/);
});

Deno.test("parseGguf() rejects a bad general.alignment", () => {
  rejects(
    header(0, 1).str("general.alignment").u32(GgufValueType.UINT64).u64(32).build(),
    /Bad general.alignment: expected type UINT32, found UINT64/,
  );
  for (const v of [0, 48]) {
    rejects(
      header(0, 1).str("general.alignment").u32(GgufValueType.UINT32).u32(v).build(),
      new RegExp(`expected a power of two, found ${v}`),
    );
  }
});

Deno.test("parseGguf() rejects u64 fields above 2^53", () => {
  rejects(header(2n ** 60n as unknown as number, 0).build(), /Absurd tensor count/, 8);
  rejects(
    header(0, 1).str("a").u32(GgufValueType.UINT64).u64(2n ** 64n - 1n).build().subarray(0, 42),
    /Truncated/,
  );
  const file = parseGguf(
    header(0, 1).str("a").u32(GgufValueType.UINT64).u64(2n ** 64n - 1n).build(),
  );
  equal(file.get("a")?.value, 2n ** 64n - 1n);
});

Deno.test("parseGgufSource() reads only header windows; tensor views are made per tensor", () => {
  // A 3 GiB file described by its header alone: any read of the data section would fail.
  const spec = {
    metadata: [],
    tensors: Array.from({ length: 3 }, (_, i) => ({
      name: `t${i}`,
      type: GgmlType.F32,
      ne: [1 << 28],
      data: () => new Uint8Array(),
    })),
  };
  const layout = layoutGguf(spec);
  const calls: [number, number][] = [];
  const file = parseGgufSource({
    byteLength: layout.totalBytes,
    view(offsetBytes, byteLength) {
      calls.push([offsetBytes, byteLength]);
      if (offsetBytes >= layout.dataOffset) return new Uint8Array(0); // stands in for a lazy view
      const out = new Uint8Array(Math.min(byteLength, layout.dataOffset - offsetBytes));
      out.set(layout.header.subarray(offsetBytes, offsetBytes + out.length));
      return out;
    },
  });
  equal(file.tensors.length, 3);
  deepStrictEqual(calls, [[0, 1 << 20]]); // one 1 MiB window from the start
  file.tensorData("t2");
  deepStrictEqual(calls.at(-1), [layout.dataOffset + 2 * (1 << 30), 1 << 30]);
});
