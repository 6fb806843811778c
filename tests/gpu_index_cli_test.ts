import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { readGpuIndex } from "../src/gpu_index/gpuidx.ts";
import { sharedFixture } from "./_helpers.ts";

const CLI = new URL("../src/cli/gpu_index.ts", import.meta.url).pathname;

async function run(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("gpu-index CLI writes the index and prints neuronsPerLayer as JSON", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = `${dir}/fortune.gguf`;
    await Deno.copyFile(sharedFixture("fortune-relu/fortune-relu.q4.powerinfer.gguf"), model);
    const r = await run([
      "-m",
      model,
      "--activation",
      sharedFixture("fortune-relu/activation"),
      "--neurons",
      "2048",
      "--json",
    ]);
    strictEqual(r.code, 0, r.stderr);
    const plan = JSON.parse(r.stdout);
    // The greedy optimum on these statistics (see gpu_index_stats_test.ts).
    deepStrictEqual(plan.neuronsPerLayer, [768, 256, 256, 768]);
    strictEqual(plan.out, `${model}.generated.gpuidx`);
    const index = readGpuIndex(plan.out);
    deepStrictEqual(index.layers.map((l) => l.gpuBucket.length), [768, 256, 256, 768]);
    strictEqual(index.vramCapacity, 2048 * plan.neuronBytes);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gpu-index CLI fails loudly without statistics and with an impossible budget", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = `${dir}/fortune.gguf`;
    await Deno.copyFile(sharedFixture("fortune-relu/fortune-relu.q4.powerinfer.gguf"), model);
    const missing = await run(["-m", model, "--vram-budget", "1"]);
    strictEqual(missing.code, 1);
    ok(/No activation statistics/.test(missing.stderr), missing.stderr);
    ok(/deno task profile/.test(missing.stderr), missing.stderr);
    const tiny = await run([
      "-m",
      model,
      "--activation",
      sharedFixture("fortune-relu/activation"),
      "--vram-budget",
      "0.001",
    ]);
    strictEqual(tiny.code, 1);
    ok(/more than the budget/.test(tiny.stderr), tiny.stderr);
    // Nothing was written.
    ok(![...Deno.readDirSync(dir)].some((e) => e.name.endsWith(".gpuidx")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
