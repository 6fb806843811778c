// readModelConfig() and the weight views reject missing or inconsistent models with a typed
// ModelConfigError naming what was expected and found.
import { equal, throws } from "node:assert/strict";
import { ModelConfigError } from "../src/errors.ts";
import { parseGguf } from "../src/gguf/reader.ts";
import { GgmlType, type GgufKv, GgufValueType } from "../src/gguf/types.ts";
import { serializeGguf } from "../src/gguf/writer.ts";
import { readModelConfig, sparseThreshold } from "../src/model/config.ts";
import { matrix, stackedRows, vector } from "../src/model/weights.ts";

const U32 = GgufValueType.UINT32;

function llamaKvs(over: Record<string, number | string | undefined> = {}): GgufKv[] {
  const base: Record<string, number | string | undefined> = {
    "general.architecture": "llama",
    "llama.context_length": 128,
    "llama.embedding_length": 64,
    "llama.feed_forward_length": 128,
    "llama.block_count": 1,
    "llama.attention.head_count": 4,
    "llama.attention.head_count_kv": 2,
    "llama.attention.layer_norm_rms_epsilon": 1e-5,
    ...over,
  };
  const kvs: GgufKv[] = [];
  for (const [key, value] of Object.entries(base)) {
    if (value === undefined) continue;
    const float = key.endsWith("epsilon") || key.endsWith("freq_base");
    kvs.push(
      typeof value === "string"
        ? { key, type: GgufValueType.STRING, value }
        : { key, type: float ? GgufValueType.FLOAT32 : U32, value },
    );
  }
  return kvs;
}

async function file(kvs: GgufKv[], magic: "GGUF" | "PWRI" = "GGUF", embd = [64, 10]) {
  const n = embd[0]! * embd[1]!;
  return parseGguf(
    await serializeGguf({
      magic,
      metadata: kvs,
      tensors: [
        {
          name: "token_embd.weight",
          type: GgmlType.F32,
          ne: embd,
          data: () => new Uint8Array(n * 4),
        },
        { name: "norm.weight", type: GgmlType.F32, ne: [64], data: () => new Uint8Array(256) },
      ],
    }),
  );
}

Deno.test("readModelConfig() reads a consistent LLaMA header", async () => {
  using f = await file([...llamaKvs(), {
    key: "powerinfer.sparse_threshold",
    type: GgufValueType.FLOAT32,
    value: 0.25,
  }], "PWRI");
  const c = readModelConfig(f);
  equal(c.arch, "llama");
  equal(c.sparse, true);
  equal(c.headDim, 16);
  equal(c.nEmbdGqa, 32);
  equal(c.nVocab, 10);
  equal(c.ropeFreqBase, 10000);
  equal(c.fileSparseThreshold, 0.25);
  equal(sparseThreshold(c.fileSparseThreshold, undefined), 0.25);
});

const BAD: [string, Record<string, number | string | undefined>, RegExp][] = [
  ["no architecture", { "general.architecture": undefined }, /general\.architecture" is missing/],
  [
    "an unknown architecture",
    { "general.architecture": "gpt2" },
    /Unsupported architecture "gpt2"/,
  ],
  ["no block count", { "llama.block_count": undefined }, /llama\.block_count" is missing/],
  [
    "heads not dividing n_embd",
    { "llama.attention.head_count": 5 },
    /not a multiple of the head count 5/,
  ],
  [
    "kv heads not dividing heads",
    { "llama.attention.head_count_kv": 3 },
    /not a multiple of the KV head count 3/,
  ],
  [
    "a RoPE dim other than the head dim",
    { "llama.rope.dimension_count": 8 },
    /must equal the head dim 16/,
  ],
  [
    "no norm epsilon",
    { "llama.attention.layer_norm_rms_epsilon": undefined },
    /layer_norm_rms_epsilon" is missing/,
  ],
  ["a zero FFN width", { "llama.feed_forward_length": 0 }, /must be a positive integer, found 0/],
  ["a mistyped key", { "llama.embedding_length": "64" }, /must be an integer/],
];
for (const [what, over, message] of BAD) {
  Deno.test(`readModelConfig() rejects ${what}`, async () => {
    using f = await file(llamaKvs(over));
    throws(
      () => readModelConfig(f),
      (e: unknown) => e instanceof ModelConfigError && message.test(e.message),
    );
  });
}

Deno.test("readModelConfig() rejects a vocabulary that disagrees with token_embd", async () => {
  const tokens: GgufKv = {
    key: "tokenizer.ggml.tokens",
    type: GgufValueType.ARRAY,
    elementType: GgufValueType.STRING,
    value: ["a", "b", "c"],
  };
  using f = await file([...llamaKvs(), tokens]);
  throws(() => readModelConfig(f), /3 tokens but token_embd.weight has 10 rows/);
});

Deno.test("matrix() and vector() check names, shapes and types", async () => {
  using f = await file(llamaKvs());
  equal(matrix(f, "token_embd.weight", 64, 10).nRows, 10);
  throws(() => matrix(f, "token_embd.weight", 64, 11), /has shape \[64, 10\]: expected \[64, 11\]/);
  throws(() => matrix(f, "output.weight", 64, 10), /Tensor "output.weight" is missing/);
  equal(vector(f, "norm.weight", 64).length, 64);
  throws(() => vector(f, "norm.weight", 32), ModelConfigError);
});

Deno.test("stackedRows() views adjacent matrices of one type and width as one, else null", () => {
  const bytes = new Uint8Array(64 * 6);
  const t = (name: string, off: number, rows: number, type = GgmlType.F32, cols = 16) => ({
    name,
    type,
    nRows: rows,
    nCols: cols,
    data: bytes.subarray(off, off + rows * cols * 4),
  });
  const q = t("q", 0, 2), k = t("k", 128, 1), v = t("v", 192, 1);
  const s = stackedRows("qkv", [q, k, v]);
  equal(s?.nRows, 4);
  equal(s?.nCols, 16);
  equal(s?.data.byteOffset, 0);
  equal(s?.data.byteLength, 256);
  equal(s?.data.buffer, bytes.buffer); // a view, not a copy
  equal(stackedRows("gap", [q, t("k", 192, 1)]), null);
  equal(stackedRows("order", [k, q]), null);
  equal(stackedRows("type", [q, t("k", 128, 1, GgmlType.F16, 32)]), null);
  equal(stackedRows("width", [q, t("k", 128, 2, GgmlType.F32, 8)]), null);
  equal(stackedRows("other buffer", [q, { ...k, data: new Uint8Array(64) }]), null);
});
