import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { denseItems, GIB, modelBudget, neuronByteCost } from "../src/gpu_index/budget.ts";
import { parseGguf } from "../src/gguf/reader.ts";
import { GpuIndexError } from "../src/errors.ts";
import { sharedFixture } from "./_helpers.ts";

const file = parseGguf(
  await Deno.readFile(sharedFixture("fortune-relu/fortune-relu.q4.powerinfer.gguf")),
);

Deno.test("denseItems() counts every non-FFN, non-embedding tensor once, by category", () => {
  const shape = { nLayer: 4, nFf: 1024, nEmbd: 192, nEmbdGqa: 64, nHead: 6, nVocab: 1024 };
  const items = denseItems(file.tensors, shape, { nCtx: 256, nBatch: 8, kvType: "f16" });
  deepStrictEqual(items.map((i) => i.part), [
    "attention",
    "predictor",
    "ffn norms",
    "output",
    "kv cache",
    "scratch",
  ]);
  deepStrictEqual(items.slice(0, 4).map((i) => i.detail), [
    "20 tensors",
    "8 tensors",
    "4 tensors",
    "2 tensors",
  ]);
  const ffnAndEmbd = file.tensors
    .filter((t) => /ffn_(up|gate|down_t)\.weight$|^token_embd/.test(t.name))
    .reduce((a, t) => a + t.byteLength, 0);
  const all = file.tensors.reduce((a, t) => a + t.byteLength, 0);
  const tensorItems = items.slice(0, 4).reduce((a, i) => a + i.byteLength, 0);
  strictEqual(tensorItems + ffnAndEmbd, all);
  strictEqual(items[4]!.byteLength, 2 * 64 * 4 * 256 * 2); // K and V, f16
  // 5·192 + 2·64 + 6·256 + 64 (predictor hidden) + 4·1024 + 1024 floats per token
  strictEqual(items[5]!.byteLength, 4 * 8 * (960 + 128 + 1536 + 64 + 4096 + 1024));
});

Deno.test("neuronByteCost() is one Q4_0 row each of up, gate, down_t plus a bucket entry", () => {
  strictEqual(neuronByteCost(file, 4), 3 * (192 / 32) * 18 + 4);
});

Deno.test("modelBudget() turns GiB into a neuron capacity after the dense blocks", () => {
  const b = modelBudget(file, 0.05, { nCtx: 256, nBatch: 8 });
  strictEqual(b.budgetBytes, Math.floor(0.05 * GIB));
  strictEqual(b.ffnBytes, b.budgetBytes - b.denseBytes);
  strictEqual(b.capacityNeurons, Math.floor(b.ffnBytes / 328));
  throws(() => modelBudget(file, 0.0001), GpuIndexError);
  try {
    modelBudget(file, 0.0001);
  } catch (e) {
    ok(/more than the budget/.test((e as Error).message));
  }
});
