// make-model (src/bench/make_model.ts): the synthetic bench model has the planted sparsity, an
// exact predictor, the PWRI layout the engine loads, a dense twin and activation statistics.
import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { join } from "node:path";
import { makeModel } from "../src/bench/make_model.ts";
import { openGguf } from "../src/gguf/open.ts";
import { loadModel } from "../src/model/model.ts";

const dir = await Deno.makeTempDir({ prefix: "make_model_test_" });
const sparsePath = join(dir, "tiny.gguf");
const densePath = join(dir, "tiny.dense.gguf");
const made = await makeModel({ shape: "tiny", out: sparsePath, seed: 3 });
await makeModel({ shape: "tiny", out: densePath, seed: 3, dense: true });
const ids = Array.from({ length: 48 }, (_, i) => 100 + ((i * 7919) % 31000));

function run(path: string, threshold?: number) {
  let fired = 0, total = 0;
  using model = loadModel(path, {
    nCtx: 64,
    sparseThreshold: threshold,
    onFfnActivation: (_l, active) => {
      for (const v of active) fired += v;
      total += active.length;
    },
  });
  const logits = model.eval(ids);
  return { logits: Float32Array.from(logits), active: fired / total };
}

Deno.test("makeModel() writes the PWRI layout with predictors and sparse-threshold key", () => {
  using f = openGguf(sparsePath);
  equal(f.magic, "PWRI");
  deepStrictEqual(f.tensor("blk.1.ffn_down_t.weight")?.ne, [64, 1024]);
  deepStrictEqual(f.tensor("blk.0.fc1.weight")?.ne, [64, 64]);
  deepStrictEqual(f.tensor("blk.0.fc2.weight")?.ne, [64, 1024]);
  equal(f.getF32("powerinfer.sparse_threshold"), 0);
  equal(f.getArray("tokenizer.ggml.tokens")?.length, 32000);
});

Deno.test("makeModel() dense twin is a plain GGUF with ffn_down and no predictor", () => {
  using f = openGguf(densePath);
  equal(f.magic, "GGUF");
  deepStrictEqual(f.tensor("blk.0.ffn_down.weight")?.ne, [1024, 64]);
  equal(f.tensor("blk.0.fc1.weight"), undefined);
});

Deno.test("makeModel() plants ~13% active neurons and the predictor is exact", () => {
  const sparse = run(sparsePath);
  ok(sparse.active > 0.08 && sparse.active < 0.2, `active fraction ${sparse.active}`);
  const mean = made.activeFraction.reduce((s, v) => s + v, 0) / made.activeFraction.length;
  ok(Math.abs(mean - 0.13) < 0.03, `planted ${mean}`);
  // predictor off (every neuron computed): the same neurons fire up to fp16 rounding at the
  // threshold (a few neuron-tokens in 10^5), so the logits agree closely
  const all = run(sparsePath, -3.4e38);
  ok(Math.abs(all.active - sparse.active) < 1e-3, `${all.active} vs ${sparse.active}`);
  let worst = 0;
  for (let i = 0; i < all.logits.length; i++) {
    worst = Math.max(worst, Math.abs(all.logits[i]! - sparse.logits[i]!));
  }
  ok(worst < 1e-2, `logits differ by ${worst}`);
});

Deno.test("makeModel() writes activation statistics in the gpu-index JSON format", async () => {
  ok(made.statsPath);
  const stats = JSON.parse(await Deno.readTextFile(made.statsPath));
  equal(stats.format, "powerinfer-deno.activation");
  equal(stats.layers.length, 2);
  equal(stats.layers[0].length, 1024);
  ok(stats.layers[0].every((c: number) => Number.isInteger(c) && c >= 0 && c <= stats.tokens));
});

Deno.test("makeModel() is reproducible from its seed", async () => {
  const again = join(dir, "again.gguf");
  await makeModel({ shape: "tiny", out: again, seed: 3, statsDir: null });
  deepStrictEqual(await Deno.readFile(again), await Deno.readFile(sparsePath));
});

globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
