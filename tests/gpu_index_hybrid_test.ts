// The hot/cold split end to end without a GPU: a GPU index made by the policy drives the engine,
// the CPU kernels skip the hot neurons, TsHotFfn computes them in plain TS from the same
// weights, and the sum equals the all-CPU result.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu.ts";
import type { SparseArgs, WeightTensor } from "../src/backend/backend.ts";
import { loadModel } from "../src/model/model.ts";
import { openGguf } from "../src/gguf/open.ts";
import { budgetShapeOf, denseItems, GIB, neuronByteCost } from "../src/gpu_index/budget.ts";
import { gpuIndexForLoad, resolveGpuIndex } from "../src/gpu_index/policy.ts";
import { gpuIndexLayer } from "../src/gpu_index/gpuidx.ts";
import { solveGpuIndex } from "../src/gpu_index/solve.ts";
import { readActivationDirSync } from "../src/gpu_index/stats.ts";
import { TsHotFfn } from "../src/gpu_index/ts_hot_ffn.ts";
import { GpuIndexError } from "../src/errors.ts";
import { assertClose, sharedFixture } from "./_helpers.ts";

const RUN = { nCtx: 64, nBatch: 8 } as const;

/** CPU kernels plus a check that every hot neuron's sparse-matmul output is exactly 0. */
class CheckingCpuBackend extends CpuBackend {
  hotSkipped = 0;
  calls = 0;
  constructor() {
    super();
    // Hide the fused per-layer call so the engine runs the op-by-op path we can inspect.
    Object.defineProperty(this, "sparseFfn", { value: undefined });
  }
  override sparseMatmul(
    out: Float32Array,
    w: WeightTensor,
    x: Float32Array,
    nTokens: number,
    s: SparseArgs,
  ): void {
    super.sparseMatmul(out, w, x, nTokens, s);
    this.calls++;
    if (!s.gpuIdx) return;
    for (let t = 0; t < nTokens; t++) {
      for (let j = 0; j < w.nRows; j++) {
        if (!s.gpuIdx[j]) continue;
        if (out[t * w.nRows + j] !== 0) {
          throw new Error(`CPU computed hot neuron ${j} of ${w.name} (token ${t})`);
        }
        if (s.pred[t * w.nRows + j]! >= s.threshold) this.hotSkipped++;
      }
    }
  }
}

/** A temp dir with a copy of the model and a link to its activation statistics. */
async function modelDir(model: string, activation: string) {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/model.powerinfer.gguf`;
  await Deno.copyFile(sharedFixture(model), path);
  await Deno.symlink(sharedFixture(activation), `${dir}/activation`);
  return { dir, path };
}

/** A budget (GiB) that leaves room for exactly `neurons` hot neurons after the dense blocks. */
function budgetFor(path: string, neurons: number): number {
  using file = openGguf(path);
  const shape = budgetShapeOf(file);
  const dense = denseItems(file.tensors, shape, RUN).reduce((a, d) => a + d.byteLength, 0);
  return (dense + neurons * neuronByteCost(file, shape.nLayer) + 1) / GIB;
}

/**
 * Runs a prompt (3 decodes of nBatch 8) and 3 single tokens through the split model and the
 * all-CPU model; returns the worst logit difference, after checking the CPU skipped hot neurons
 * and the TS hot side contributed.
 */
async function compareSplit(
  path: string,
  gpuIdx: Uint8Array[],
  hot: TsHotFfn,
  tol: number,
  fused: boolean,
  kvType: "f16" | "f32" = "f16",
) {
  const backend = fused ? new CpuBackend() : new CheckingCpuBackend();
  using split = loadModel(path, { ...RUN, kvType, backend, gpuIdx, hot });
  using cpu = loadModel(path, { ...RUN, kvType });
  const fortunes: string[] = JSON.parse(
    await Deno.readTextFile(sharedFixture("fortune-relu/val_fortunes.json")),
  );
  const ids = cpu.tokenize(fortunes.slice(0, 5).join("\n")).slice(0, 20);
  strictEqual(ids.length, 20);
  const steps = [ids.slice(0, 17), [ids[17]!], [ids[18]!], [ids[19]!]];
  for (const [s, step] of steps.entries()) {
    assertClose(split.eval(step), cpu.eval(step), tol, `logits after step ${s}`);
  }
  if (backend instanceof CheckingCpuBackend) {
    ok(backend.calls > 0);
    ok(backend.hotSkipped > 1000, `hot neurons skipped by the CPU: ${backend.hotSkipped}`);
  }
  ok(hot.contributed > 1000, `hot neurons that contributed: ${hot.contributed}`);
}

Deno.test("Hot/cold split on an F32 model: CPU + TS hot side = all-CPU up to summation order", async () => {
  // F32 weights and an f32 KV cache: no rounding to fp16 anywhere, so the only difference is the
  // order of the f32 sums (cold then hot vs ascending): logits (|x| <= 8) agree to ~1e-6.
  const path = sharedFixture("models/tiny/tiny.powerinfer.f32.gguf");
  using file = openGguf(path);
  const stats = readActivationDirSync(sharedFixture("models/tiny/activation"));
  const sol = solveGpuIndex({ counts: stats.counts, capacityNeurons: 1024 });
  deepStrictEqual(sol.neuronsPerLayer, [512, 512]);
  const layers = [0, 1].map((i) => gpuIndexLayer(1024, sol.gpuBucket(i)));
  for (const fused of [false, true]) {
    await compareSplit(
      path,
      layers.map((l) => l.gpuIdx),
      new TsHotFfn(file, layers),
      2e-5,
      fused,
      "f32",
    );
  }
});

Deno.test("A generated GPU index splits an F16 model: CPU skips hot neurons, CPU + TS hot side = all-CPU", async () => {
  const { dir, path } = await modelDir(
    "fortune-relu/fortune-relu.powerinfer.gguf",
    "fortune-relu/activation",
  );
  try {
    using file = openGguf(path);
    const decision = resolveGpuIndex(path, file, { vramBudget: budgetFor(path, 2048), ...RUN });
    strictEqual(decision.status, "generated");
    deepStrictEqual(decision.plan!.solution.neuronsPerLayer, [768, 256, 256, 768]);
    // F16 weights: both sides round the FFN input and the activation to fp16, but their dot
    // products differ in the last f32 bits (lane order), and a value that lands on an fp16
    // rounding boundary then moves by one fp16 step (5e-4 relative). Over 4 layers this gives
    // logit differences of ~3e-3 on logits up to 12 (PowerInfer's own CPU vs torch: 2e-3..5e-3).
    for (const fused of [false, true]) {
      const hot = new TsHotFfn(file, decision.index!.layers);
      await compareSplit(path, decision.gpuIdx!, hot, 1e-2, fused);
    }
    // Control: skipping the hot neurons without a hot side changes the logits a lot, so the
    // equality above really depends on the hot side.
    using cold = loadModel(path, { ...RUN, gpuIdx: decision.gpuIdx! });
    using cpu = loadModel(path, RUN);
    const a = cold.eval([1, 450, 900]);
    const b = cpu.eval([1, 450, 900]);
    ok(a.some((v, i) => Math.abs(v - b[i]!) > 0.5));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resolveGpuIndex() reuses a matching index, regenerates on a budget change or reset", async () => {
  const { dir, path } = await modelDir(
    "fortune-relu/fortune-relu.q4.powerinfer.gguf",
    "fortune-relu/activation",
  );
  try {
    using file = openGguf(path);
    const lines: string[] = [];
    const log = (l: string) => lines.push(l);
    const b1 = budgetFor(path, 1024);
    const first = resolveGpuIndex(path, file, { vramBudget: b1, ...RUN, log });
    strictEqual(first.status, "generated");
    strictEqual(first.path, `${path}.generated.gpuidx`);
    const again = resolveGpuIndex(path, file, { vramBudget: b1, ...RUN, log });
    strictEqual(again.status, "loaded");
    deepStrictEqual(again.gpuIdx, first.gpuIdx);
    const bigger = resolveGpuIndex(path, file, { vramBudget: budgetFor(path, 3072), ...RUN, log });
    strictEqual(bigger.status, "generated");
    ok(/budget changed/.test(bigger.message), bigger.message);
    strictEqual(bigger.index!.layers.reduce((a, l) => a + l.gpuBucket.length, 0), 3072);
    const reset = resolveGpuIndex(path, file, {
      vramBudget: budgetFor(path, 3072),
      resetGpuIndex: true,
      ...RUN,
    });
    strictEqual(reset.status, "generated");
    const disabled = resolveGpuIndex(path, file, { vramBudget: b1, disableGpuIndex: true, ...RUN });
    strictEqual(disabled.status, "disabled");
    strictEqual(disabled.gpuIdx, null);
    strictEqual(resolveGpuIndex(path, file, RUN).status, "no-budget");
    strictEqual(lines.length, 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resolveGpuIndex() fails loudly when statistics are missing or the budget is impossible", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/model.powerinfer.gguf`;
    await Deno.copyFile(sharedFixture("fortune-relu/fortune-relu.q4.powerinfer.gguf"), path);
    using file = openGguf(path);
    let error: unknown;
    try {
      resolveGpuIndex(path, file, { vramBudget: budgetFor(path, 1024), ...RUN });
    } catch (e) {
      error = e;
    }
    ok(error instanceof GpuIndexError && /deno task profile/.test(error.message), String(error));
    error = undefined;
    try {
      resolveGpuIndex(path, file, { vramBudget: 0.0001, ...RUN });
    } catch (e) {
      error = e;
    }
    ok(error instanceof GpuIndexError && /more than the budget/.test(error.message), String(error));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gpuIndexForLoad() ignores the budget without a hot side and resolves with one", async () => {
  const { dir, path } = await modelDir(
    "fortune-relu/fortune-relu.q4.powerinfer.gguf",
    "fortune-relu/activation",
  );
  try {
    using file = openGguf(path);
    const lines: string[] = [];
    const vramBudget = budgetFor(path, 512);
    strictEqual(gpuIndexForLoad(path, file, { vramBudget, ...RUN }, (l) => lines.push(l)), null);
    ok(/ignored/.test(lines[0]!), lines[0]);
    ok(![...Deno.readDirSync(dir)].some((e) => e.name.endsWith(".gpuidx")));
    const hot = { addHot() {} };
    const masks = gpuIndexForLoad(path, file, { vramBudget, hot, ...RUN });
    strictEqual(masks!.reduce((a, m) => a + m!.reduce((x, y) => x + y, 0), 0), 512);
    const given = [null, null, null, null];
    strictEqual(gpuIndexForLoad(path, file, { vramBudget, hot, gpuIdx: given }), given);
    strictEqual(gpuIndexForLoad(path, file, { vramBudget, hot, disableGpuIndex: true }), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadModel({ vramBudget, hot }) reuses the index next to the model and splits the FFN", async () => {
  const { dir, path } = await modelDir(
    "fortune-relu/fortune-relu.powerinfer.gguf",
    "fortune-relu/activation",
  );
  try {
    using file = openGguf(path);
    const vramBudget = budgetFor(path, 1024);
    // The hot side must hold the same neurons the engine will skip: make the index first...
    const made = resolveGpuIndex(path, file, { vramBudget, ...RUN });
    strictEqual(made.status, "generated");
    const mtime = Deno.statSync(made.path!).mtime!.getTime();
    const hot = new TsHotFfn(file, made.index!.layers);
    // ...then the engine's policy finds it (same budget) and uses it.
    using split = loadModel(path, { ...RUN, vramBudget, hot });
    using cpu = loadModel(path, RUN);
    ok(/1024 of 4096 neurons hot/.test(split.summary()), split.summary());
    assertClose(split.eval([1, 450, 900, 17]), cpu.eval([1, 450, 900, 17]), 1e-2, "logits");
    ok(hot.contributed > 0);
    strictEqual(Deno.statSync(made.path!).mtime!.getTime(), mtime); // reused, not rewritten
    // --disable-gpu-index: the hot side is never asked.
    const idle = new TsHotFfn(file, made.index!.layers);
    using off = loadModel(path, { ...RUN, vramBudget, hot: idle, disableGpuIndex: true });
    cpu.reset();
    assertClose(off.eval([1, 450]), cpu.eval([1, 450]), 0, "disabled = all-CPU");
    strictEqual(idle.computed, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
