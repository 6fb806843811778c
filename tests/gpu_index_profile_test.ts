import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { profileActivations } from "../src/gpu_index/profile.ts";
import { readActivationDir, readActivationPt } from "../src/gpu_index/stats.ts";
import { sharedFixture } from "./_helpers.ts";

const FORTUNE_Q4 = sharedFixture("fortune-relu/fortune-relu.q4.powerinfer.gguf");
const FIXTURE_TOKENS = 22351; // README: activation counts over 22,351 validation tokens

const fortunes: string[] = JSON.parse(
  await Deno.readTextFile(sharedFixture("fortune-relu/val_fortunes.json")),
);

Deno.test("profileActivations() on the fortune model matches the fixture's active fractions", async () => {
  const fixture = await readActivationDir(sharedFixture("fortune-relu/activation"));
  const expected = fixture.counts.map((c) =>
    c.reduce((a, b) => a + b, 0) / (FIXTURE_TOKENS * 1024)
  );
  // 1536 of the 22,351 tokens keep the test short; the full run agrees closer (see the report).
  const result = profileActivations(FORTUNE_Q4, fortunes, { maxTokens: 1536 });
  strictEqual(result.tokens, 1536);
  strictEqual(result.counts.length, 4);
  result.activeFraction.forEach((f, i) => {
    ok(Math.abs(f - expected[i]!) < 0.03, `layer ${i}: profiled ${f}, fixture ${expected[i]}`);
  });
  // The same neurons are hot: most of the fixture's 256 hottest neurons per layer are among ours.
  for (let i = 0; i < 4; i++) {
    const top = (c: Float64Array) =>
      new Set(Array.from(c.keys()).sort((a, b) => c[b]! - c[a]! || a - b).slice(0, 256));
    const ours = top(result.counts[i]!);
    const theirs = [...top(fixture.counts[i]!)];
    const shared = theirs.filter((j) => ours.has(j)).length;
    ok(shared >= 200, `layer ${i}: ${shared} of 256 hottest neurons shared`);
  }
});

Deno.test("profileActivations() predictor mode equals gate mode on the exact-predictor tiny model", () => {
  // models/tiny's predictor is exact (fc2·ReLU(fc1·x) = rms(x)·gate pre-activation), so the
  // neurons it selects are exactly those whose gate fires.
  const path = sharedFixture("models/tiny/tiny.powerinfer.f32.gguf");
  const docs = ["Once upon a time there was a little fox who lived in the forest."];
  const gate = profileActivations(path, docs, { mode: "gate" });
  const pred = profileActivations(path, docs, { mode: "predictor" });
  strictEqual(gate.tokens, pred.tokens);
  let diff = 0;
  let total = 0;
  gate.counts.forEach((c, i) =>
    c.forEach((v, j) => {
      diff += Math.abs(v - pred.counts[i]![j]!);
      total += v;
    })
  );
  ok(total > 0);
  ok(diff <= total * 0.005, `gate vs predictor counts differ by ${diff} of ${total}`);
});

Deno.test("deno task profile writes statistics that deno task gpu-index then uses", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = `${dir}/fortune.gguf`;
    await Deno.copyFile(FORTUNE_Q4, model);
    const cli = (name: string, args: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", new URL(`../src/cli/${name}.ts`, import.meta.url).pathname, ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
    const dec = new TextDecoder();
    const p = await cli("profile", [
      "-m",
      model,
      "-f",
      sharedFixture("fortune-relu/val_fortunes.json"),
      "--max-tokens",
      "256",
      "--pt",
      "--json",
    ]);
    strictEqual(p.code, 0, dec.decode(p.stderr));
    const prof = JSON.parse(dec.decode(p.stdout));
    strictEqual(prof.out, `${dir}/activation/activation_counts.json`);
    strictEqual(prof.tokens, 256);
    const stats = await readActivationDir(`${dir}/activation`, { nLayer: 4, nFf: 1024 });
    strictEqual(stats.tokens, 256);
    // The .pt copies hold the same counts (PowerInfer's solver can read them).
    for (let i = 0; i < 4; i++) {
      const pt = readActivationPt(await Deno.readFile(`${dir}/activation/activation_${i}.pt`));
      deepStrictEqual(pt, stats.counts[i]);
    }
    const g = await cli("gpu_index", ["-m", model, "--neurons", "1024", "--json"]);
    strictEqual(g.code, 0, dec.decode(g.stderr));
    const plan = JSON.parse(dec.decode(g.stdout));
    strictEqual(plan.activation, `${dir}/activation/activation_counts.json`);
    deepStrictEqual(plan.neuronsPerLayer.reduce((a: number, b: number) => a + b, 0), 1024);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
