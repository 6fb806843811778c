import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import {
  ACTIVATION_JSON,
  formatActivationJson,
  parseActivationJson,
  readActivationDir,
  readActivationPt,
} from "../src/gpu_index/stats.ts";
import { solveGpuIndex } from "../src/gpu_index/solve.ts";
import { torchSave1d } from "../src/gpu_index/torch_save.ts";
import { CheckpointFormatError, GpuIndexError } from "../src/errors.ts";
import { seededRandom, sharedFixture } from "./_helpers.ts";

const sum = (a: ArrayLike<number>) => Array.from(a).reduce((x, y) => x + y, 0);

Deno.test("readActivationDir() reads the fortune-relu statistics (int64 .pt files)", async () => {
  const stats = await readActivationDir(sharedFixture("fortune-relu/activation"));
  strictEqual(stats.counts.length, 4);
  for (const c of stats.counts) strictEqual(c.length, 1024);
  deepStrictEqual(Array.from(stats.counts[0]!.subarray(0, 5)), [9830, 6390, 7868, 9016, 5648]);
  strictEqual(stats.counts[0]![1023], 1791);
  strictEqual(sum(stats.counts[0]!), 6089421);
  strictEqual(Math.max(...stats.counts[0]!), 12358); // README: max_count of layer 0
  deepStrictEqual(Array.from(stats.counts[3]!.subarray(0, 5)), [3122, 5378, 7666, 2589, 3157]);
  strictEqual(sum(stats.counts[3]!), 5866456);
  strictEqual(Math.max(...stats.counts[3]!), 19303);
  // README: 272.4 active neurons per token in layer 0 over 22,351 tokens.
  strictEqual(Math.round((sum(stats.counts[0]!) / 22351) * 10) / 10, 272.4);
});

Deno.test("readActivationDir() reads the tiny and falcon-tiny statistics", async () => {
  const tiny = await readActivationDir(sharedFixture("models/tiny/activation"), {
    nLayer: 2,
    nFf: 1024,
  });
  deepStrictEqual(Array.from(tiny.counts[1]!.subarray(0, 5)), [0, 25, 14, 1, 17]);
  strictEqual(sum(tiny.counts[1]!), 18932);
  strictEqual(Math.max(...tiny.counts[1]!), 123);
  const falcon = await readActivationDir(sharedFixture("models/falcon-tiny/activation"));
  strictEqual(falcon.counts.length, 2);
  deepStrictEqual(Array.from(falcon.counts[0]!.subarray(0, 5)), [7, 2, 2, 45, 1]);
  strictEqual(sum(falcon.counts[0]!), 18234);
  strictEqual(Math.max(...falcon.counts[0]!), 112);
});

Deno.test("readActivationDir() matches files to layers by number, not by text order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // 12 layers; layer L gets fixture file floor(L / 3), so layers 2 and 10 differ.
    for (let layer = 0; layer < 12; layer++) {
      await Deno.copyFile(
        sharedFixture(`fortune-relu/activation/activation_${Math.floor(layer / 3)}.pt`),
        `${dir}/activation_${layer}.pt`,
      );
    }
    const stats = await readActivationDir(dir, { nLayer: 12 });
    const fixture = await readActivationDir(sharedFixture("fortune-relu/activation"));
    for (let layer = 0; layer < 12; layer++) {
      deepStrictEqual(stats.counts[layer], fixture.counts[Math.floor(layer / 3)], `${layer}`);
    }
    await Deno.remove(`${dir}/activation_7.pt`);
    await readActivationDir(dir, { nLayer: 12 }).then(
      () => ok(false, "expected an error"),
      (e) => ok(e instanceof GpuIndexError && /activation_7\.pt/.test(e.message), String(e)),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readActivationDir() says how to fix missing statistics", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const path of [`${dir}/missing`, dir]) {
      await readActivationDir(path).then(
        () => ok(false, "expected an error"),
        (e) => ok(e instanceof GpuIndexError && /deno task profile/.test(e.message), String(e)),
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readActivationPt() gives CheckpointFormatError on truncated files", async () => {
  const bytes = await Deno.readFile(sharedFixture("fortune-relu/activation/activation_1.pt"));
  for (let n = 0; n < bytes.length; n += 37) {
    throws(() => readActivationPt(bytes.subarray(0, n)), CheckpointFormatError, `length ${n}`);
  }
});

Deno.test("readActivationPt() gives a typed error or valid counts on corrupted files", async () => {
  const bytes = await Deno.readFile(sharedFixture("fortune-relu/activation/activation_2.pt"));
  const rand = seededRandom(11);
  for (let trial = 0; trial < 300; trial++) {
    const bad = bytes.slice();
    for (let k = 0; k < 1 + Math.floor(rand() * 4); k++) {
      bad[Math.floor(rand() * bad.length)] = Math.floor(rand() * 256);
    }
    try {
      const counts = readActivationPt(bad);
      ok(counts instanceof Float64Array);
    } catch (e) {
      ok(e instanceof CheckpointFormatError, `trial ${trial}: ${e}`);
    }
  }
});

Deno.test("formatActivationJson() round-trips through parseActivationJson() and the directory reader", async () => {
  const counts = [Float64Array.from([3, 0, 2.5]), Float64Array.from([0, 0, 7])];
  const text = formatActivationJson({ counts, tokens: 9 }, { model: "m.gguf", threshold: 0 });
  const back = parseActivationJson(text);
  deepStrictEqual(back.counts, counts);
  strictEqual(back.tokens, 9);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/${ACTIVATION_JSON}`, text);
    deepStrictEqual((await readActivationDir(dir, { nLayer: 2, nFf: 3 })).counts, counts);
    await readActivationDir(dir, { nFf: 4 }).then(
      () => ok(false, "expected an error"),
      (e) => ok(e instanceof GpuIndexError, String(e)),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  throws(() => parseActivationJson("{"), GpuIndexError);
  throws(() => parseActivationJson('{"format":"x","version":1,"layers":[[1]]}'), GpuIndexError);
  throws(
    () =>
      parseActivationJson('{"format":"powerinfer-deno.activation","version":1,"layers":[[-1]]}'),
    GpuIndexError,
  );
});

/** gpu-index.md §3 with threshold 0, written out plainly (see gpu_index_solve_test.ts). */
function powerInferGreedy(counts: Float64Array[], capacity: number, batch: number): number[] {
  const all: { c: number; layer: number }[] = [];
  counts.forEach((layer, i) => {
    const desc = Array.from(layer).sort((a, b) => b - a);
    for (let g = 0; g < desc.length / batch; g++) {
      all.push({ c: -sum(desc.slice(g * batch, (g + 1) * batch)), layer: i });
    }
  });
  all.sort((a, b) => a.c - b.c);
  const out = counts.map(() => 0);
  for (const { c, layer } of all.slice(0, Math.floor(capacity / batch))) {
    if (c < 0) out[layer]! += batch;
  }
  return out;
}

Deno.test("solveGpuIndex() reproduces PowerInfer's counts on the fortune-relu statistics", async () => {
  const { counts } = await readActivationDir(sharedFixture("fortune-relu/activation"));
  for (const capacity of [0, 256, 1000, 2048, 3000, 4096]) {
    const sol = solveGpuIndex({ counts, capacityNeurons: capacity });
    deepStrictEqual(sol.neuronsPerLayer, powerInferGreedy(counts, capacity, 256), `${capacity}`);
  }
  // The README's run: capacity 2048 over 4 layers.
  const sol = solveGpuIndex({ counts, capacityNeurons: 2048 });
  strictEqual(sum(sol.neuronsPerLayer), 2048);
});

Deno.test("torchSave1d() writes .pt files the reader reads back, layer numbers intact", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const counts = Array.from({ length: 12 }, (_, i) => [i, 0, 1000 * i, 2 ** 40 + i]);
    for (const [i, c] of counts.entries()) {
      await Deno.writeFile(`${dir}/activation_${i}.pt`, torchSave1d(c, `activation_${i}`));
    }
    const stats = await readActivationDir(dir, { nLayer: 12, nFf: 4 });
    stats.counts.forEach((c, i) => deepStrictEqual([...c], counts[i]));
    // Fractional values are stored as float64; the layout matches the fixture's (data at 64·k).
    const bytes = torchSave1d([0.5, 2.25], "activation_0");
    deepStrictEqual([...readActivationPt(bytes)], [0.5, 2.25]);
    const fixture = await Deno.readFile(sharedFixture("fortune-relu/activation/activation_0.pt"));
    const same = torchSave1d(readActivationPt(fixture), "activation_0");
    deepStrictEqual(readActivationPt(same), readActivationPt(fixture));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
