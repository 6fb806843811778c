// Synthetic models written with our own GGUF writer: LLaMA and Bamboo, dense and sparse, F32
// and F16, with an FFN width (100) that is no multiple of anything. The native CPU backend
// must agree with the pure-TS spec backend, and a sparse model with every neuron forced on
// must equal its dense twin.
import { deepStrictEqual, ok } from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu.ts";
import type { Backend } from "../src/backend/backend.ts";
import { serializeGguf } from "../src/gguf/writer.ts";
import { GgmlType, type GgufKv, GgufValueType } from "../src/gguf/types.ts";
import { loadModel } from "../src/model/model.ts";
import { dequantize, quantize } from "../src/quant/quantize.ts";
import { assertClose, seededRandom } from "./_helpers.ts";
import { TsBackend } from "./_ts_backend.ts";

interface Synthetic {
  arch: "llama" | "bamboo";
  sparse: boolean;
  type: GgmlType.F32 | GgmlType.F16;
  /** Quantized twin: 2-D weights Q4_0, token_embd Q8_0, output Q6_K (values pre-rounded). */
  quantized?: boolean;
  nEmbd?: number;
  nFf?: number;
  nLayer?: number;
}

const N_HEAD_KV = 2, N_FF = 100;

function vocab(): GgufKv[] {
  const tokens = ["<unk>", "<s>", "</s>"];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(6);
  }
  for (const w of ["\u2581a", "\u2581b", "\u2581the", "\u2581cat", "at", "\u2581sat"]) {
    tokens.push(w);
    types.push(1);
  }
  const A = GgufValueType.ARRAY;
  return [
    { key: "tokenizer.ggml.model", type: GgufValueType.STRING, value: "llama" },
    { key: "tokenizer.ggml.tokens", type: A, elementType: GgufValueType.STRING, value: tokens },
    {
      key: "tokenizer.ggml.scores",
      type: A,
      elementType: GgufValueType.FLOAT32,
      value: tokens.map((_, i) => -i),
    },
    { key: "tokenizer.ggml.token_type", type: A, elementType: GgufValueType.INT32, value: types },
    { key: "tokenizer.ggml.bos_token_id", type: GgufValueType.UINT32, value: 1 },
    { key: "tokenizer.ggml.eos_token_id", type: GgufValueType.UINT32, value: 2 },
  ];
}

const N_VOCAB = 3 + 256 + 6;

/** Writes a random model; dense and sparse twins share every weight (ffn_down_t = ffn_downᵀ). */
async function writeModel(dir: string, m: Synthetic): Promise<string> {
  const N_EMBD = m.nEmbd ?? 64, N_FF = m.nFf ?? 100, N_HEAD = N_EMBD / 16, HD = 16;
  const N_LAYER = m.nLayer ?? 2;
  const N_HIDDEN = m.nEmbd === undefined ? 16 : 32; // Q4_0 predictors need multiples of 32
  const rand = seededRandom(1234);
  const tensors: { name: string; ne: number[]; values: Float32Array; keepF32?: boolean }[] = [];
  const add = (name: string, ne: number[], scale: number, keepF32 = false, offset = 0) =>
    tensors.push({
      name,
      ne,
      keepF32,
      values: Float32Array.from(
        { length: ne[0]! * (ne[1] ?? 1) },
        () => offset + (rand() * 2 - 1) * scale,
      ),
    });
  add("token_embd.weight", [N_EMBD, N_VOCAB], 1);
  for (let l = 0; l < N_LAYER; l++) {
    const p = `blk.${l}`;
    add(`${p}.attn_norm.weight`, [N_EMBD], 0.2, true, 1);
    add(`${p}.attn_q.weight`, [N_EMBD, N_EMBD], 0.3);
    add(`${p}.attn_k.weight`, [N_EMBD, HD * N_HEAD_KV], 0.3);
    add(`${p}.attn_v.weight`, [N_EMBD, HD * N_HEAD_KV], 0.3);
    add(`${p}.attn_output.weight`, [N_EMBD, N_EMBD], 0.2);
    add(`${p}.ffn_norm.weight`, [N_EMBD], 0.2, true, 1);
    add(`${p}.ffn_gate.weight`, [N_EMBD, N_FF], 0.3);
    add(`${p}.ffn_up.weight`, [N_EMBD, N_FF], 0.3);
    add(`${p}.ffn_down.weight`, [N_FF, N_EMBD], 0.2);
    add(`${p}.fc1.weight`, [N_EMBD, N_HIDDEN], 0.3);
    add(`${p}.fc2.weight`, [N_HIDDEN, N_FF], 0.3);
  }
  add("output_norm.weight", [N_EMBD], 0.2, true, 1);
  add("output.weight", [N_EMBD, N_VOCAB], 0.3);

  const out = tensors.flatMap((t) => {
    if (m.sparse && t.name.endsWith("ffn_down.weight")) {
      const [nCols, nRows] = t.ne as [number, number]; // [N_FF, N_EMBD] -> [N_EMBD, N_FF]
      const tr = new Float32Array(t.values.length);
      for (let r = 0; r < nRows; r++) {
        for (let c = 0; c < nCols; c++) tr[c * nRows + r] = t.values[r * nCols + c]!;
      }
      return [{
        ...t,
        name: t.name.replace("ffn_down", "ffn_down_t"),
        ne: [nRows, nCols],
        values: tr,
      }];
    }
    if (!m.sparse && /fc[12]\.weight$/.test(t.name)) return [];
    return [t];
  }).map((t) => {
    const qType = t.name === "output.weight"
      ? GgmlType.Q6_K
      : t.name === "token_embd.weight"
      ? GgmlType.Q8_0
      : GgmlType.Q4_0;
    // twins of a quantized model hold the same (pre-rounded) values
    if (m.nEmbd !== undefined && !t.keepF32) {
      t.values = dequantize(qType, quantize(qType, t.values));
    }
    if (m.quantized && !t.keepF32) {
      return { name: t.name, type: qType, ne: t.ne, data: () => quantize(qType, t.values) };
    }
    const f16 = m.type === GgmlType.F16 && !t.keepF32;
    return {
      name: t.name,
      type: f16 ? GgmlType.F16 : GgmlType.F32,
      ne: t.ne,
      data: () => new Uint8Array(f16 ? Float16Array.from(t.values).buffer : t.values.buffer),
    };
  });
  const U32 = GgufValueType.UINT32;
  const k = (s: string) => `${m.arch}.${s}`;
  const metadata: GgufKv[] = [
    { key: "general.architecture", type: GgufValueType.STRING, value: m.arch },
    { key: k("context_length"), type: U32, value: 128 },
    { key: k("embedding_length"), type: U32, value: N_EMBD },
    { key: k("feed_forward_length"), type: U32, value: N_FF },
    { key: k("block_count"), type: U32, value: N_LAYER },
    { key: k("attention.head_count"), type: U32, value: N_HEAD },
    { key: k("attention.head_count_kv"), type: U32, value: N_HEAD_KV },
    { key: k("attention.layer_norm_rms_epsilon"), type: GgufValueType.FLOAT32, value: 1e-5 },
    { key: k("rope.dimension_count"), type: U32, value: HD },
    ...(m.sparse
      ? [{ key: "powerinfer.sparse_threshold", type: GgufValueType.FLOAT32, value: 0 } as GgufKv]
      : []),
    ...vocab(),
  ];
  const bytes = await serializeGguf({ magic: m.sparse ? "PWRI" : "GGUF", metadata, tensors: out });
  const path = `${dir}/${m.arch}-${m.sparse ? "sparse" : "dense"}-${GgmlType[m.type]}-${
    m.quantized ? "q" : ""
  }${N_EMBD}-${N_FF}-${N_LAYER}.gguf`;
  await Deno.writeFile(path, bytes);
  return path;
}

const PROMPT = [1, 260, 264, 259, 262, 100];
const STEPS = [261, 263, 3];

function run(
  path: string,
  backend: Backend,
  threshold?: number,
  kvType: "f16" | "f32" = "f16",
): Float32Array[] {
  using model = loadModel(path, { backend, nCtx: 32, sparseThreshold: threshold, kvType });
  const out = [model.eval(PROMPT)];
  for (const id of STEPS) out.push(model.eval([id]));
  return out;
}

const dir = await Deno.makeTempDir({ prefix: "pi-synthetic-" });
const cases: Synthetic[] = [];
for (const arch of ["llama", "bamboo"] as const) {
  for (const sparse of [false, true]) {
    for (const type of [GgmlType.F32, GgmlType.F16] as const) cases.push({ arch, sparse, type });
  }
}
const paths = new Map<string, string>();
for (const c of cases) paths.set(JSON.stringify(c), await writeModel(dir, c));
const pathOf = (c: Synthetic) => paths.get(JSON.stringify(c))!;

for (const c of cases) {
  const label = `${c.arch} ${c.sparse ? "sparse" : "dense"} ${GgmlType[c.type]} n_ff ${N_FF}`;
  Deno.test(`Model.eval() on the CPU backend equals the TS spec backend (${label})`, () => {
    const native = run(pathOf(c), new CpuBackend());
    const ts = run(pathOf(c), new TsBackend());
    for (const [i, logits] of native.entries()) {
      assertClose(logits, ts[i]!, 2e-4, `${label} step ${i}`);
    }
  });
}

for (const arch of ["llama", "bamboo"] as const) {
  Deno.test(`Model.eval() ${arch} sparse with every neuron on equals its dense twin for ReLU gates`, () => {
    if (arch === "llama") {
      // dense llama is SwiGLU while sparse is ReGLU: they must differ
      const dense = run(pathOf({ arch, sparse: false, type: GgmlType.F32 }), new CpuBackend());
      const sparse = run(
        pathOf({ arch, sparse: true, type: GgmlType.F32 }),
        new CpuBackend(),
        -1e30,
      );
      ok(dense[0]!.some((v, i) => Math.abs(v - sparse[0]![i]!) > 1e-3));
      return;
    }
    const dense = run(
      pathOf({ arch, sparse: false, type: GgmlType.F32 }),
      new CpuBackend(),
      undefined,
      "f32",
    );
    const sparse = run(
      pathOf({ arch, sparse: true, type: GgmlType.F32 }),
      new CpuBackend(),
      -1e30,
      "f32",
    );
    for (const [i, logits] of sparse.entries()) assertClose(logits, dense[i]!, 1e-4, `step ${i}`);
  });
}

Deno.test("Model.eval() sparse bamboo with the predictor actually skips neurons", () => {
  const path = pathOf({ arch: "bamboo", sparse: true, type: GgmlType.F32 });
  let skipped = 0;
  using model = loadModel(path, {
    nCtx: 32,
    onFfnActivation: (_l, active) => skipped += active.length - active.reduce((a, b) => a + b, 0),
  });
  model.eval(PROMPT);
  ok(skipped > 0);
});

globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

Deno.test("Model.eval() of a prompt batch equals feeding it in chunks of 2 and one by one", () => {
  const path = pathOf({ arch: "llama", sparse: true, type: GgmlType.F16 });
  const lastLogits = (nBatch: number, oneByOne: boolean) => {
    using model = loadModel(path, { nCtx: 32, nBatch });
    let logits: Float32Array = new Float32Array();
    if (oneByOne) { for (const id of PROMPT) logits = model.eval([id]); }
    else logits = model.eval(PROMPT);
    return logits;
  };
  const batch = lastLogits(512, false);
  assertClose(lastLogits(2, false), batch, 1e-5, "chunks of 2");
  assertClose(lastLogits(512, true), batch, 1e-5, "one by one");
});

Deno.test("Model.eval() with Q4_0 weights, Q8_0 embeddings and a Q6_K output tracks its F32 twin", async () => {
  const base = { arch: "llama", sparse: true, type: GgmlType.F32, nEmbd: 256, nFf: 512 } as const;
  // every neuron on: a random predictor would flip neurons between the twins
  const q = run(await writeModel(dir, { ...base, quantized: true }), new CpuBackend(), -1e30);
  const f = run(await writeModel(dir, base), new CpuBackend(), -1e30);
  for (const [i, logits] of q.entries()) {
    // same weight values; only the Q8_0/Q8_K rounding of activations differs
    const scale = Math.max(...f[i]!.map(Math.abs));
    assertClose(logits, f[i]!, 0.05 * scale, `step ${i}`);
  }
});

Deno.test("Model.shiftContext() re-rotates the moved keys (1-layer model: equals a fresh decode)", async () => {
  // With one layer K and V depend only on (token, position), so after a shift the cache must
  // hold what a fresh decode of the kept tokens would hold, up to the double rotation's rounding.
  const path = await writeModel(dir, {
    arch: "llama",
    sparse: false,
    type: GgmlType.F32,
    nLayer: 1,
  });
  for (const kvType of ["f32", "f16"] as const) {
    using model = loadModel(path, { nCtx: 32, kvType });
    const tokens = [1, 260, 264, 259, 262, 100, 261, 263, 3, 40, 50, 60, 70, 80];
    model.eval(tokens);
    ok(model.shiftContext(1) === 6); // keep 2, drop (14 - 1 - 1) / 2 = 6
    const kept = [...model.tokens];
    const shifted = model.eval([264]);
    model.reset();
    const fresh = model.eval([...kept, 264]);
    assertClose(shifted, fresh, kvType === "f32" ? 1e-4 : 2e-2, `logits after a shift (${kvType})`);
  }
});

Deno.test("Model.eval() sparse logits are bit-identical with 1, 2 and 4 threads at n_ff 100", () => {
  // n_ff 100 is no multiple of the 32-row chunks: the ragged last chunk must not change bits
  for (const arch of ["llama", "bamboo"] as const) {
    const path = pathOf({ arch, sparse: true, type: GgmlType.F16 });
    const [one, ...rest] = [1, 2, 4].map((threads) =>
      run(path, new CpuBackend({ threads })).flatMap((l) => [...l])
    );
    for (const other of rest) deepStrictEqual(other, one, arch);
  }
});
