// LLaMA forward passes (dense GGUF, sparse PWRI f16/q4_0/f32) against PowerInfer's reference
// logits and the float32 torch forward, by teacher forcing (shared/fixtures/models/README.md).
import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { loadModel } from "../src/model/model.ts";
import { argmax, referenceRuns, type RefRun, teacherForce } from "./_model_helpers.ts";
import { getThreads } from "../ffi/ops.ts";
import { hasSharedFixture, sharedFixture } from "./_helpers.ts";

const DIR = "models/tiny";
const REF = `${DIR}/reference_outputs.json`;
const hasRef = hasSharedFixture(REF);
const reference = hasRef ? JSON.parse(await Deno.readTextFile(sharedFixture(REF))) : null;

const absDiff = (a: number, b: number) => Math.abs(a - b);
const relDiff = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-6);

const CASES = [
  { file: "tiny.powerinfer.f16.gguf", tol: 1e-2 },
  { file: "tiny.powerinfer.q4_0.gguf", tol: 5e-2 },
  { file: "tiny.dense.f16.gguf", tol: 1e-2 },
];

for (const { file, tol } of CASES) {
  Deno.test({
    name: `Model.eval() matches PowerInfer on ${file} (teacher forcing, 32 steps)`,
    ignore: !hasRef,
    fn() {
      using model = loadModel(sharedFixture(`${DIR}/${file}`), { nCtx: 64, threads: 1 });
      for (const run of referenceRuns(reference.models[file], file)) {
        const worst = teacherForce(model, run, absDiff, tol);
        console.log(
          `  ${file} ${JSON.stringify(run.prompt)}: max |dlogit| ${worst.toExponential(2)}`,
        );
      }
    },
  });
}

Deno.test({
  name: "Model.eval() on the F32 PWRI file matches the float32 torch forward within 1e-4 relative",
  ignore: !hasRef || !hasSharedFixture(`${DIR}/tiny.powerinfer.f32.gguf`),
  fn() {
    using model = loadModel(sharedFixture(`${DIR}/tiny.powerinfer.f32.gguf`), {
      nCtx: 64,
      kvType: "f32",
    });
    for (const run of referenceRuns(reference.torch_f32_reference.results, "torch f32")) {
      const worst = teacherForce(model, run, relDiff, 1e-4, 1e-3);
      console.log(
        `  f32 ${JSON.stringify(run.prompt)}: max relative dlogit ${worst.toExponential(2)}`,
      );
    }
  },
});

for (const file of ["tiny.powerinfer.f16.gguf", "tiny.powerinfer.q4_0.gguf"]) {
  Deno.test({
    name: `Model.eval() sparse logits are bit-identical with 1, 2 and 4 threads (${file})`,
    ignore: !hasRef,
    fn() {
      const run = (reference.models[file] as RefRun[])[0]!;
      const results: number[][] = [];
      for (const threads of [1, 2, 4]) {
        using model = loadModel(sharedFixture(`${DIR}/${file}`), { nCtx: 32, threads });
        const out: number[] = [...model.eval(run.prompt_ids)];
        for (const id of run.generated_ids.slice(0, 6)) out.push(...model.eval([id]));
        // the pool really ran with that many threads (else the comparison proves nothing)
        equal(getThreads(), threads);
        ok(out.every(Number.isFinite));
        results.push(out);
      }
      deepStrictEqual(results[1], results[0]);
      deepStrictEqual(results[2], results[0]);
    },
  });
}

for (const file of ["tiny.powerinfer.f16.gguf", "tiny.powerinfer.q4_0.gguf"]) {
  Deno.test({
    name: `Model.eval() fused sparse FFN equals the op-by-op path bit for bit (${file})`,
    ignore: !hasRef,
    fn() {
      const run = (reference.models[file] as RefRun[])[1]!;
      const logitsOf = (hook: boolean) => {
        using model = loadModel(sharedFixture(`${DIR}/${file}`), {
          nCtx: 32,
          onFfnActivation: hook ? () => {} : undefined, // the hook forces the op-by-op path
        });
        const out: number[] = [...model.eval(run.prompt_ids)];
        for (const id of run.generated_ids.slice(0, 4)) out.push(...model.eval([id]));
        return out;
      };
      deepStrictEqual(logitsOf(false), logitsOf(true));
    },
  });
}

Deno.test({
  name: "Model.eval() runs a Q8_0 PWRI file (Q5_0 predictors, as quantize writes them)",
  ignore: !hasRef,
  async fn() {
    const { parseQuantizeTarget, quantizeModel } = await import("../src/quant/quantize_model.ts");
    const dir = await Deno.makeTempDir({ prefix: "pi-q8-" });
    try {
      const path = `${dir}/tiny.q8_0.gguf`;
      await quantizeModel(
        sharedFixture(`${DIR}/tiny.powerinfer.f16.gguf`),
        path,
        parseQuantizeTarget("Q8_0"),
      );
      using model = loadModel(path, { nCtx: 64 });
      let agree = 0, steps = 0;
      for (const run of reference.models["tiny.powerinfer.f16.gguf"] as RefRun[]) {
        model.reset();
        let logits = model.eval(run.prompt_ids);
        for (const id of run.generated_ids) {
          if (argmax(logits) === id) agree++;
          steps++;
          logits = model.eval([id]);
        }
      }
      // Q8_0 weights stay close to the F16 model: greedy choices agree almost everywhere
      ok(agree >= 0.9 * steps, `${agree} of ${steps} steps agree`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "Model.eval() on an F32 PWRI file made by our converter matches torch within 1e-4 relative",
  ignore: !hasRef || !hasSharedFixture(`${DIR}/hf/pytorch_model.bin`),
  async fn() {
    const { convertModel } = await import("../src/convert/convert.ts");
    const dir = await Deno.makeTempDir({ prefix: "pi-f32-" });
    try {
      const path = `${dir}/tiny.f32.gguf`;
      await convertModel(sharedFixture(`${DIR}/hf`), path, {
        outtype: "f32",
        predictorDir: sharedFixture(`${DIR}/predictor`),
      });
      using model = loadModel(path, { nCtx: 64, kvType: "f32" });
      equal(model.config.sparse, true);
      for (const run of referenceRuns(reference.torch_f32_reference.results, "torch f32")) {
        teacherForce(model, run, relDiff, 1e-4, 1e-3);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
