// HF checkpoint + predictors -> PowerInfer GGUF (src/convert/): byte equality with PowerInfer's
// converter outputs, Falcon re-layout, sharded safetensors, and typed errors.
//
// Quirks of PowerInfer's converters that the reference bytes encode (we reproduce them):
// - general.name is the model directory's name ("hf"), "LLaMA v2" only when n_ctx == 4096.
// - No tokenizer.ggml.add_bos_token/add_eos_token although tokenizer_config.json sets
//   add_bos_token: the gguf-py PowerInfer ships reads tokenizer_config.json only next to a
//   tokenizer.json. padding_token_id 0 comes from config.json pad_token_id (fortune-relu: null,
//   so no key).
// - Tensor order: convert.py writes checkpoint order then predictors; the Falcon HF converter
//   writes predictors first. fc1/fc2 and ffn_down_t are F16 in f16 files, 1-D tensors F32.
// - Falcon: n_ff = 4 * hidden_size (ffn_hidden_size ignored), context_length 2048 hard-coded,
//   the tied embedding written twice (token_embd and output), bf16 widened to f32 before f16.
// - q4_0: output.weight is Q8_0, not Q4_0 (quantize wants Q6_K and falls back to Q8_0 when the
//   row length is not a multiple of 256; Falcon always gets Q8_0); quantization_version last.
import { deepStrictEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import {
  CheckpointFormatError,
  ConvertError,
  GgmlType,
  type GgufFile,
  parseGguf,
  serializeGguf,
  TokenizerError,
} from "../mod.ts";
import {
  convertModel,
  permuteQk,
  planConversion,
  relayoutFalconQkv,
} from "../src/convert/convert.ts";
import { f16BitsFromF32Bits } from "../src/convert/dtype.ts";
import { SafetensorsFile } from "../src/convert/safetensors.ts";
import { llamaVocabKvs } from "../src/convert/vocab.ts";
import { parseSentencePieceModel } from "../src/convert/sentencepiece.ts";
import { parseHfTokenizerJson } from "../src/convert/hf_tokenizer.ts";
import { fp16FromF32 } from "../src/quant/f16.ts";
import { ZipArchive } from "../src/torch/zip.ts";
import { seededRandom, sharedFixture } from "./_helpers.ts";

const TINY = sharedFixture("models/tiny");
const FORTUNE = sharedFixture("fortune-relu");
const FALCON = sharedFixture("models/falcon-tiny");

async function convertInMemory(
  modelDir: string,
  opts: Parameters<typeof planConversion>[1],
): Promise<Uint8Array> {
  using plan = planConversion(modelDir, opts);
  return await serializeGguf({ magic: plan.magic, metadata: plan.metadata, tensors: plan.tensors });
}

/** Byte equality, with the first differing KV or tensor named when it fails. */
function assertSameFile(ours: Uint8Array, refPath: string): void {
  const ref = Deno.readFileSync(refPath);
  if (ours.length === ref.length && ours.every((b, i) => b === ref[i])) return;
  const a = parseGguf(ours);
  const b = parseGguf(ref);
  const show = (v: unknown) =>
    JSON.stringify(v, (_, x) => (typeof x === "bigint" ? String(x) : x)).slice(0, 300);
  deepStrictEqual([...a.metadata.keys()], [...b.metadata.keys()], "metadata keys");
  for (const [k, v] of b.metadata) equal(show(a.get(k)), show(v), `metadata ${k}`);
  deepStrictEqual(
    a.tensors.map((t) => [t.name, t.type, t.ne]),
    b.tensors.map((t) => [t.name, t.type, t.ne]),
  );
  for (const t of b.tensors) {
    const da = a.tensorData(t.name);
    const db = b.tensorData(t);
    const i = da.findIndex((x, j) => x !== db[j]);
    equal(i, -1, `tensor ${t.name} differs first at byte ${i}`);
  }
  equal(ours.length, ref.length, "file length");
  ok(false, "files differ outside metadata and tensor data");
}

for (
  const [what, opts, ref] of [
    ["f16 PWRI", { outtype: "f16", predictorDir: `${TINY}/predictor` }, "tiny.powerinfer.f16.gguf"],
    ["f32 PWRI", { outtype: "f32", predictorDir: `${TINY}/predictor` }, "tiny.powerinfer.f32.gguf"],
    ["dense f16", { outtype: "f16", dense: true }, "tiny.dense.f16.gguf"],
    // q4_0 = convert.py f16 then PowerInfer's quantize Q4_0 (output.weight Q8_0, see above).
    [
      "q4_0 PWRI",
      { outtype: "q4_0", predictorDir: `${TINY}/predictor` },
      "tiny.powerinfer.q4_0.gguf",
    ],
  ] as const
) {
  Deno.test(`planConversion() tiny ${what} equals PowerInfer's ${ref} byte for byte`, async () => {
    assertSameFile(await convertInMemory(`${TINY}/hf`, opts), `${TINY}/${ref}`);
  });
}

Deno.test("planConversion() fortune-relu (safetensors, GQA 6/2) equals its PowerInfer GGUF", async () => {
  const opts = { outtype: "f16", predictorDir: `${FORTUNE}/predictor` } as const;
  assertSameFile(
    await convertInMemory(`${FORTUNE}/hf`, opts),
    `${FORTUNE}/fortune-relu.powerinfer.gguf`,
  );
});

Deno.test("planConversion() fortune-relu q4_0 equals PowerInfer's quantized file", async () => {
  const opts = { outtype: "q4_0", predictorDir: `${FORTUNE}/predictor` } as const;
  assertSameFile(
    await convertInMemory(`${FORTUNE}/hf`, opts),
    `${FORTUNE}/fortune-relu.q4.powerinfer.gguf`,
  );
});

// The converted fortune-relu file generates what the shipped one generates (and what PowerInfer's
// main printed with -t 1), through our engine: greedy, teacher-free, prompts from reference.json.
Deno.test("convertModel() fortune-relu output generates the same greedy tokens as the shipped file", async () => {
  const { loadModel } = await import("../src/model/model.ts");
  const reference = JSON.parse(await Deno.readTextFile(`${FORTUNE}/reference.json`));
  const run = reference.runs.find((r: { model: string; env: object }) =>
    r.model === "fortune-relu.powerinfer.gguf" && Object.keys(r.env).length === 0
  );
  const dir = await Deno.makeTempDir({ prefix: "convert_test_" });
  const out = join(dir, "fortune-relu.gguf");
  try {
    await convertModel(`${FORTUNE}/hf`, out, { predictorDir: `${FORTUNE}/predictor` });
    const greedy = (path: string, promptIds: number[], n: number): number[] => {
      using model = loadModel(path, { threads: 1, nCtx: 256 });
      const ids: number[] = [];
      let logits = model.eval(promptIds);
      for (let i = 0; i < n; i++) {
        let best = 0;
        for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[best]!) best = j;
        ids.push(best);
        if (best === 2) break;
        logits = model.eval([best]);
      }
      return ids;
    };
    for (const r of run.results.slice(0, 3)) {
      const n = r.generated_ids_t1.length;
      const ours = greedy(out, r.prompt_ids, n);
      deepStrictEqual(ours, greedy(`${FORTUNE}/fortune-relu.powerinfer.gguf`, r.prompt_ids, n));
      // PowerInfer main -t 1 printed the same tokens for these prompts.
      deepStrictEqual(ours, r.generated_ids_t1, `prompt ${JSON.stringify(r.prompt)}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task convert (cli main) writes the dense tiny file and rejects bad usage", async () => {
  const { main } = await import("../src/cli/convert.ts");
  const dir = await Deno.makeTempDir({ prefix: "convert_test_" });
  try {
    const out = join(dir, "tiny.dense.gguf");
    equal(await main(["--dense", "--outfile", out, `${TINY}/hf`]), 0);
    assertSameFile(await Deno.readFile(out), `${TINY}/tiny.dense.f16.gguf`);
    equal(await main(["--outtype", "q8_0", "--outfile", out, `${TINY}/hf`]), 1);
    equal(await main([`${TINY}/hf`]), 1); // no --outfile
    equal(await main(["--outfile", join(dir, "x.gguf"), `${TINY}/hf`]), 1); // no predictors
    equal([...Deno.readDirSync(dir)].length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Synthetic checkpoints (safetensors writer, temp directories)

type StEntry = [name: string, dtype: string, shape: number[], data: Uint8Array];

function safetensorsBytes(entries: StEntry[]): Uint8Array {
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const [name, dtype, shape, data] of entries) {
    header[name] = { dtype, shape, data_offsets: [off, off + data.length] };
    off += data.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const h = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + h.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  let p = 8 + h.length;
  for (const [, , , data] of entries) {
    out.set(data, p);
    p += data.length;
  }
  return out;
}

async function tempModelDir(
  copyFrom: string,
  files: string[],
  extra: Record<string, string | Uint8Array> = {},
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "convert_test_" });
  for (const f of files) await Deno.copyFile(join(copyFrom, f), join(dir, f));
  for (const [name, content] of Object.entries(extra)) {
    if (typeof content === "string") await Deno.writeTextFile(join(dir, name), content);
    else await Deno.writeFile(join(dir, name), content);
  }
  return dir;
}

Deno.test("planConversion() reads sharded safetensors with an index like one file", async () => {
  const st = SafetensorsFile.open(await Deno.readFile(`${FORTUNE}/hf/model.safetensors`));
  const all = [...st.tensors.values()].map((t): StEntry => {
    const x = t.load();
    return [t.name, "F32", x.shape, x.data];
  });
  const half = Math.ceil(all.length / 2);
  const shards = [all.slice(0, half), all.slice(half)];
  const weightMap: Record<string, string> = {};
  const extra: Record<string, string | Uint8Array> = {};
  shards.forEach((entries, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    extra[file] = safetensorsBytes(entries);
    for (const [name] of entries) weightMap[name] = file;
  });
  extra["model.safetensors.index.json"] = JSON.stringify({ metadata: {}, weight_map: weightMap });
  const dir = await tempModelDir(`${FORTUNE}/hf`, [
    "config.json",
    "tokenizer.model",
    "tokenizer_config.json",
  ], extra);
  try {
    const opts = { outtype: "f16", predictorDir: `${FORTUNE}/predictor` } as const;
    const bytes = await convertInMemory(dir, opts);
    // general.name is the directory name; everything else is the shipped file.
    const ours = parseGguf(bytes);
    const ref = parseGguf(await Deno.readFile(`${FORTUNE}/fortune-relu.powerinfer.gguf`));
    deepStrictEqual(ours.tensors.map((t) => t.name), ref.tensors.map((t) => t.name));
    for (const t of ref.tensors) deepStrictEqual(ours.tensorData(t.name), ref.tensorData(t));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---- Falcon: hf/ has no weights in shared/ (36 MB); its reference_outputs.json lists every
// tensor of PowerInfer's f16 file (name, ne, type, offset, sha256). We build a synthetic bf16
// checkpoint with the real names/shapes and order, and check: the metadata equals the shipped
// Q4_0 file's (quantize only changes file_type and appends quantization_version), tensor infos
// and offsets equal PowerInfer's f16 file, the data section starts where PowerInfer's does, the
// predictor tensors hash to PowerInfer's, and the QKV re-layout moves rows as the HF converter.

const FALCON_HF_NAMES: Record<string, string> = {
  "token_embd.weight": "transformer.word_embeddings.weight",
  "output.weight": "lm_head.weight",
  "output_norm.weight": "transformer.ln_f.weight",
  "output_norm.bias": "transformer.ln_f.bias",
};
function falconHfName(gguf: string): string {
  if (FALCON_HF_NAMES[gguf]) return FALCON_HF_NAMES[gguf]!;
  const m = /^blk\.(\d+)\.(.+)$/.exec(gguf)!;
  const map: Record<string, string> = {
    "attn_norm_2.weight": "ln_attn.weight",
    "attn_norm_2.bias": "ln_attn.bias",
    "attn_norm.weight": "ln_mlp.weight",
    "attn_norm.bias": "ln_mlp.bias",
    "attn_qkv.weight": "self_attention.query_key_value.weight",
    "attn_output.weight": "self_attention.dense.weight",
    "ffn_down_t.weight": "mlp.dense_4h_to_h.weight",
    "ffn_up.weight": "mlp.dense_h_to_4h.weight",
  };
  return `transformer.h.${m[1]}.${map[m[2]!]}`;
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes.slice()));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** bf16 values k/8 (|k| < 128): exact in bf16, f16 and f32, so re-layouts compare exactly. */
function bf16Values(n: number, rand: () => number): Uint8Array {
  const out = new Uint16Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) {
    f[0] = (Math.floor(rand() * 255) - 127) / 8;
    out[i] = u[0]! >>> 16;
  }
  return new Uint8Array(out.buffer);
}

Deno.test("planConversion() Falcon (synthetic bf16 weights) matches PowerInfer's layout and metadata", async () => {
  const refJson = JSON.parse(await Deno.readTextFile(`${FALCON}/reference_outputs.json`));
  const refF16 = refJson.files["falcon-tiny.powerinfer.f16.gguf"];
  const refTensors = refF16.tensors as {
    name: string;
    ne: number[];
    type: string;
    offset: number;
    sha256: string;
  }[];
  const rand = seededRandom(40);
  const entries: StEntry[] = [];
  const hf = new Map<string, { shape: number[]; data: Uint8Array }>();
  let embd: Uint8Array | undefined;
  for (const t of refTensors) {
    if (/\.fc[12]\./.test(t.name)) continue;
    const name = falconHfName(t.name);
    let shape = [...t.ne].reverse();
    if (t.name.endsWith("ffn_down_t.weight")) shape = [shape[1]!, shape[0]!]; // HF [n_embd, n_ff]
    let data = bf16Values(shape.reduce((a, b) => a * b, 1), rand);
    if (name === "transformer.word_embeddings.weight") embd = data;
    if (name === "lm_head.weight") data = embd!; // tied
    entries.push([name, "BF16", shape, data]);
    hf.set(name, { shape, data });
  }
  const dir = await tempModelDir(`${FALCON}/hf`, [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
  ], { "model.safetensors": safetensorsBytes(entries) });
  const out = join(dir, "out.gguf");
  try {
    await convertModel(dir, out, { outtype: "f16", predictorDir: `${FALCON}/predictor` });
    const ours = parseGguf(await Deno.readFile(out));
    const q4 = parseGguf(await Deno.readFile(`${FALCON}/falcon-tiny.powerinfer.q4_0.gguf`));
    equal(ours.magic, "PWRI");
    // Metadata: the Q4_0 file's, except what quantize changed.
    const show = (v: unknown) => JSON.stringify(v);
    const refKeys = [...q4.metadata.keys()].filter((k) => k !== "general.quantization_version");
    deepStrictEqual([...ours.metadata.keys()], refKeys);
    for (const k of refKeys) {
      if (k === "general.file_type") equal(ours.getU32(k), 1);
      else equal(show(ours.get(k)), show(q4.get(k)), `metadata ${k}`);
    }
    // Tensor infos, offsets and the start of the data section equal PowerInfer's f16 file.
    deepStrictEqual(
      ours.tensors.map((t) => [t.name, t.ne, GgmlType[t.type], t.offsetBytes]),
      refTensors.map((t) => [t.name, t.ne, t.type, t.offset]),
    );
    const last = refTensors.at(-1)!;
    equal(ours.dataOffset, refF16.bytes - last.offset - last.ne[0]! * last.ne[1]! * 2);
    // Predictors come from the real model_N.pt: their bytes are PowerInfer's.
    for (const t of refTensors.filter((t) => /\.fc[12]\./.test(t.name))) {
      equal(await sha256(ours.tensorData(t.name)), t.sha256, t.name);
    }
    checkFalconTensors(ours, hf);
    // --outtype q4_0 (f16, then quantize Q4_0): metadata equals the shipped Q4_0 file's, tensor
    // infos too (output.weight Q8_0 for Falcon), and the real predictors' Q4_0 bytes are equal.
    const q = parseGguf(
      await convertInMemory(dir, { outtype: "q4_0", predictorDir: `${FALCON}/predictor` }),
    );
    deepStrictEqual([...q.metadata.keys()], [...q4.metadata.keys()]);
    for (const [k, v] of q4.metadata) equal(show(q.get(k)), show(v), `q4_0 metadata ${k}`);
    deepStrictEqual(
      q.tensors.map((t) => [t.name, t.ne, t.type, t.offsetBytes]),
      q4.tensors.map((t) => [t.name, t.ne, t.type, t.offsetBytes]),
    );
    equal(q.dataOffset, q4.dataOffset);
    for (const t of q4.tensors.filter((t) => /\.fc[12]\./.test(t.name))) {
      deepStrictEqual(q.tensorData(t.name), q4.tensorData(t), t.name);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function f16Row(file: GgufFile, name: string): Uint16Array {
  const d = file.tensorData(name);
  return new Uint16Array(d.slice().buffer);
}

function bf16ToF32(data: Uint8Array): Float32Array {
  const h = new Uint16Array(data.slice().buffer);
  const u = new Uint32Array(h.length);
  for (let i = 0; i < h.length; i++) u[i] = h[i]! << 16;
  return new Float32Array(u.buffer);
}

/** Independent check of the Falcon transforms with H-quant's f16 encoder. */
function checkFalconTensors(
  file: GgufFile,
  hf: Map<string, { shape: number[]; data: Uint8Array }>,
): void {
  const nHead = 8, nKv = 2, hd = 32, nEmbd = 256, nFf = 1024;
  const qkv = bf16ToF32(hf.get("transformer.h.1.self_attention.query_key_value.weight")!.data);
  const got = f16Row(file, "blk.1.attn_qkv.weight");
  // torch: view(n_kv, n_head/n_kv + 2, hd, n_embd); q = [:, :-2], k = [:, -2], v = [:, -1].
  const perGroup = nHead / nKv + 2;
  const expectRows: number[] = [];
  for (let g = 0; g < nKv; g++) {
    for (let s = 0; s < perGroup - 2; s++) expectRows.push(g * perGroup + s);
  }
  for (let g = 0; g < nKv; g++) expectRows.push(g * perGroup + perGroup - 2);
  for (let g = 0; g < nKv; g++) expectRows.push(g * perGroup + perGroup - 1);
  expectRows.forEach((srcHead, dstHead) => {
    for (let i = 0; i < hd; i += 5) {
      for (let c = 0; c < nEmbd; c += 17) {
        const v = qkv[(srcHead * hd + i) * nEmbd + c]!;
        equal(got[(dstHead * hd + i) * nEmbd + c], fp16FromF32(v), `qkv head ${dstHead} row ${i}`);
      }
    }
  });
  const down = bf16ToF32(hf.get("transformer.h.0.mlp.dense_4h_to_h.weight")!.data);
  const downT = f16Row(file, "blk.0.ffn_down_t.weight");
  for (let j = 0; j < nFf; j += 31) {
    for (let i = 0; i < nEmbd; i += 13) {
      equal(downT[j * nEmbd + i], fp16FromF32(down[i * nFf + j]!));
    }
  }
  // 1-D tensors are F32, bit-exact widenings of bf16.
  const bias = bf16ToF32(hf.get("transformer.ln_f.bias")!.data);
  deepStrictEqual(new Float32Array(file.tensorData("output_norm.bias").slice().buffer), bias);
  deepStrictEqual(file.tensorData("output.weight"), file.tensorData("token_embd.weight"));
}

// ---------------------------------------------------------------------------------------------
// Unit checks of the row transforms and the f16 rounding

Deno.test("permuteQk() pairs HF's half-split rotary rows as ggml's adjacent pairs", () => {
  // 2 heads of head dim 4, one column: row value = its HF row index.
  const x = Float32Array.from({ length: 8 }, (_, i) => i);
  deepStrictEqual([...permuteQk(x, 8, 2)], [0, 2, 1, 3, 4, 6, 5, 7]);
});

Deno.test("relayoutFalconQkv() moves per-group [q..., k, v] heads to [all q, all k, all v]", () => {
  // 4 q heads, 2 kv heads, head dim 1: HF rows q0 q1 k0 v0 q2 q3 k1 v1.
  const x = Float32Array.from([0, 1, 10, 20, 2, 3, 11, 21]);
  deepStrictEqual([...relayoutFalconQkv(x, 4, 2, 1)], [0, 1, 2, 3, 10, 11, 20, 21]);
});

Deno.test("f16BitsFromF32Bits() rounds like numpy astype(float16) on edge values", () => {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const h = (v: number) => {
    f[0] = v;
    return f16BitsFromF32Bits(u[0]!);
  };
  equal(h(65504), 0x7bff);
  equal(h(65519.99), 0x7bff);
  equal(h(65520), 0x7c00);
  equal(h(-Infinity), 0xfc00);
  equal(h(2 ** -24), 0x0001);
  equal(h(2 ** -25), 0x0000); // tie to even
  equal(h(3 * 2 ** -26), 0x0001);
  equal(h(-0), 0x8000);
  ok((h(NaN) & 0x7c00) === 0x7c00 && (h(NaN) & 0x3ff) !== 0);
  // NaN payloads the numpy way (no quiet bit added, never infinity), unlike F16C's fp16FromF32.
  equal(f16BitsFromF32Bits(0x7f800001), 0x7c01);
  equal(f16BitsFromF32Bits(0xff802000), 0xfc01);
  equal(f16BitsFromF32Bits(0x7fc00000), 0x7e00);
  // Non-NaN values now go through the quantize reference itself (one rounding routine), so
  // this loop guards the NaN split above rather than comparing two independent encoders; the
  // numpy edge values above are what pin the rounding.
  const rand = seededRandom(16);
  for (let i = 0; i < 20000; i++) {
    const v = (rand() - 0.5) * 2 ** Math.floor(rand() * 60 - 30);
    equal(h(v), fp16FromF32(Math.fround(v)), `value ${v}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Clear errors

async function withTinyVariant(
  configPatch: Record<string, unknown>,
  fn: (dir: string) => Promise<void>,
): Promise<void> {
  const config = JSON.parse(await Deno.readTextFile(`${TINY}/hf/config.json`));
  const dir = await tempModelDir(`${TINY}/hf`, ["tokenizer.model"], {
    "config.json": JSON.stringify({ ...config, ...configPatch }),
  });
  await Deno.symlink(`${TINY}/hf/pytorch_model.bin`, join(dir, "pytorch_model.bin"));
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function rejectsWith(re: RegExp) {
  return (e: Error) => {
    ok(e instanceof ConvertError, `${e.name}: ${e.message}`);
    ok(re.test(e.message), e.message);
    return true;
  };
}

Deno.test("planConversion() refuses a non-ReLU model for PWRI and explains why", async () => {
  await withTinyVariant({ hidden_act: "silu" }, (dir) => {
    throws(
      () => planConversion(dir, { predictorDir: `${TINY}/predictor` }),
      rejectsWith(/activation "silu".*expected "relu".*sparsity.*--dense/s),
    );
    // The dense converter takes it.
    planConversion(dir, { dense: true }).close();
    return Promise.resolve();
  });
});

Deno.test("planConversion() names the supported architectures for an unknown one", async () => {
  await withTinyVariant({ model_type: "gpt2", architectures: ["GPT2LMHeadModel"] }, (dir) => {
    throws(
      () => planConversion(dir, { dense: true }),
      rejectsWith(/Unsupported architecture.*LLaMA.*Falcon/),
    );
    return Promise.resolve();
  });
});

Deno.test("planConversion() rejects predictor layer counts and shapes that disagree", async () => {
  await withTinyVariant({ num_hidden_layers: 3 }, (dir) => {
    throws(
      () => planConversion(dir, { predictorDir: `${TINY}/predictor` }),
      rejectsWith(/2 predictors.*3 layers/),
    );
    return Promise.resolve();
  });
  await withTinyVariant({ intermediate_size: 512 }, (dir) => {
    throws(
      () => planConversion(dir, { predictorDir: `${TINY}/predictor` }),
      rejectsWith(/shape \[512,64\]|has shape/),
    );
    return Promise.resolve();
  });
  await withTinyVariant({}, (dir) => {
    throws(() => planConversion(dir, {}), rejectsWith(/predictor directory/));
    return Promise.resolve();
  });
});

Deno.test("planConversion() names missing tensors", async () => {
  const st = SafetensorsFile.open(await Deno.readFile(`${FORTUNE}/hf/model.safetensors`));
  const entries = [...st.tensors.values()]
    .filter((t) => t.name !== "lm_head.weight" && t.name !== "model.layers.2.mlp.up_proj.weight")
    .map((t): StEntry => {
      const x = t.load();
      return [t.name, "F32", x.shape, x.data];
    });
  const dir = await tempModelDir(`${FORTUNE}/hf`, ["config.json", "tokenizer.model"], {
    "model.safetensors": safetensorsBytes(entries),
  });
  try {
    throws(
      () => planConversion(dir, { dense: true }),
      rejectsWith(/missing 2 tensor.*output\.weight.*blk\.2\.ffn_up\.weight/),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("convertModel() leaves no output or temp file when a tensor fails to load", async () => {
  const bin = (await Deno.readFile(`${TINY}/hf/pytorch_model.bin`)).slice();
  // Break the local header of the last tensor's storage (lm_head): the central directory is
  // intact, so planning succeeds and the failure comes mid-write, after 20 tensors.
  const zip = ZipArchive.open(bin);
  const entry = zip.entries.get("pytorch_model/data/20")!;
  bin[entry.localHeaderOffset] = 0;
  const dir = await tempModelDir(`${TINY}/hf`, ["config.json", "tokenizer.model"], {
    "pytorch_model.bin": bin,
  });
  try {
    await rejects(
      convertModel(dir, join(dir, "out.gguf"), { dense: true }),
      (e: Error) => e instanceof CheckpointFormatError && /local header/.test(e.message),
    );
    deepStrictEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.includes("out")),
      [],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("llamaVocabKvs() appends added_tokens.json pieces past the base vocab as convert.py", async () => {
  const added = JSON.stringify({ "<s>": 1, "<tool>": 1024, "<end_tool>": 1025 });
  const dir = await tempModelDir(`${FORTUNE}/hf`, ["tokenizer.model", "config.json"], {
    "added_tokens.json": added,
  });
  try {
    const kvs = llamaVocabKvs(dir, 1026);
    const get = (k: string) => kvs.find((kv) => kv.key === k)!.value as unknown[];
    deepStrictEqual(get("tokenizer.ggml.tokens").slice(1023), ["Z", "<tool>", "<end_tool>"]);
    deepStrictEqual(get("tokenizer.ggml.scores").slice(1024), [-1000, -1000]);
    deepStrictEqual(get("tokenizer.ggml.token_type").slice(1024), [4, 4]);
    // config.json matching the base vocab: added tokens are ignored.
    equal((llamaVocabKvs(dir, 1024)[1]!.value as unknown[]).length, 1024);
    throws(() => llamaVocabKvs(dir, 1030), rejectsWith(/Vocab size mismatch.*1030.*1026/));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Corrupted inputs give typed errors (seeded)

Deno.test("SafetensorsFile.open() gives CheckpointFormatError on seeded corruptions", () => {
  const rand = seededRandom(81);
  const entries: StEntry[] = [
    ["a", "F32", [4, 2], new Uint8Array(32)],
    ["b", "BF16", [3], new Uint8Array(6)],
    ["c", "F16", [2, 2], new Uint8Array(8)],
  ];
  const good = safetensorsBytes(entries);
  let typed = 0;
  for (let i = 0; i < 400; i++) {
    const bytes = good.slice();
    const n = 1 + Math.floor(rand() * 3);
    for (let k = 0; k < n; k++) {
      bytes[Math.floor(rand() * Math.min(bytes.length, 120))] = Math.floor(rand() * 256);
    }
    if (i % 5 === 0) new DataView(bytes.buffer).setUint32(0, Math.floor(rand() * 2 ** 32), true);
    try {
      const f = SafetensorsFile.open(bytes);
      for (const t of f.tensors.values()) equal(t.load().data.length, t.byteLength);
    } catch (e) {
      ok(e instanceof CheckpointFormatError, `case ${i}: ${e}`);
      typed++;
    }
  }
  ok(typed > 100, `${typed} typed errors`);
});

Deno.test("parseSentencePieceModel() reads tiny's vocab and types corrupt bytes", async () => {
  const bytes = await Deno.readFile(`${TINY}/hf/tokenizer.model`);
  const m = parseSentencePieceModel(bytes);
  equal(m.pieces.length, 32000);
  deepStrictEqual(m.pieces.slice(0, 4).map((p) => [p.piece, p.type]), [["<unk>", 2], ["<s>", 3], [
    "</s>",
    3,
  ], ["<0x00>", 6]]);
  equal(m.trainer.modelType, 2); // BPE
  ok(m.trainer.byteFallback && m.trainer.splitDigits);
  ok(m.normalizer.addDummyPrefix && !m.normalizer.removeExtraWhitespaces);
  const rand = seededRandom(5);
  const head = bytes.subarray(0, 4096);
  let typed = 0;
  for (let i = 0; i < 300; i++) {
    const b = head.slice();
    for (let k = 0; k < 3; k++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
    try {
      parseSentencePieceModel(b.subarray(0, Math.floor(rand() * b.length)));
    } catch (e) {
      ok(e instanceof TokenizerError, `case ${i}: ${e}`);
      typed++;
    }
  }
  ok(typed > 100, `${typed} typed errors`);
});

Deno.test("parseHfTokenizerJson() reads Falcon's tokenizer.json and types corrupt JSON", async () => {
  const text = await Deno.readTextFile(`${FALCON}/hf/tokenizer.json`);
  const t = parseHfTokenizerJson(text);
  equal(t.vocab.size, 65024);
  equal(t.merges?.length, 64784);
  deepStrictEqual(t.addedTokens.slice(-1), [{ id: 11, content: "<|endoftext|>", special: true }]);
  const rand = seededRandom(9);
  const small = JSON.stringify({
    model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2 }, merges: ["a b"] },
    added_tokens: [{ id: 3, content: "<s>", special: true }],
  });
  for (let i = 0; i < 300; i++) {
    const chars = [...small];
    for (let k = 0; k < 2; k++) {
      chars[Math.floor(rand() * chars.length)] = String.fromCharCode(32 + Math.floor(rand() * 95));
    }
    try {
      parseHfTokenizerJson(chars.join(""));
    } catch (e) {
      ok(e instanceof TokenizerError, `case ${i}: ${e}`);
    }
  }
});
