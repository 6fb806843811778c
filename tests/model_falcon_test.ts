// Falcon (ReLU, parallel attention/MLP, NeoX RoPE, GQA, attn_norm_2) against PowerInfer's
// Q4_0 reference logits, by teacher forcing (shared/fixtures/models/falcon-tiny/README.md).
import { deepStrictEqual, equal } from "node:assert/strict";
import { loadModel } from "../src/model/model.ts";
import { hasSharedFixture, sharedFixture } from "./_helpers.ts";
import { referenceRuns, teacherForce } from "./_model_helpers.ts";

const DIR = "models/falcon-tiny";
const FILE = "falcon-tiny.powerinfer.q4_0.gguf";
const present = hasSharedFixture(`${DIR}/${FILE}`);

Deno.test({
  name: `Model.eval() matches PowerInfer on ${FILE} (teacher forcing, 32 steps)`,
  ignore: !present,
  async fn() {
    const reference = JSON.parse(
      await Deno.readTextFile(sharedFixture(`${DIR}/reference_outputs.json`)),
    );
    using model = loadModel(sharedFixture(`${DIR}/${FILE}`), { nCtx: 64, threads: 1 });
    equal(model.config.arch, "falcon");
    equal(model.config.nHeadKv, 2);
    for (const run of referenceRuns(reference.models[FILE], FILE)) {
      const worst = teacherForce(model, run, (a, b) => Math.abs(a - b), 5e-2);
      console.log(
        `  ${FILE} ${JSON.stringify(run.prompt)}: max |dlogit| ${worst.toExponential(2)}`,
      );
    }
  },
});

Deno.test({
  name: "Model.tokenize() gives PowerInfer's Falcon prompt ids (BPE, no BOS)",
  ignore: !present,
  fn() {
    using model = loadModel(sharedFixture(`${DIR}/${FILE}`), { nCtx: 16 });
    deepStrictEqual(model.tokenize("Once upon a time"), [7107, 2918, 241, 601]);
  },
});
