import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { capacityFromBudget, solveGpuIndex } from "../src/gpu_index/solve.ts";
import { GpuIndexError } from "../src/errors.ts";
import { seededRandom } from "./_helpers.ts";

/** Group masses of one layer, hottest first (sorted descending, cut into `batch`-sized groups). */
function groupMasses(counts: readonly number[], batch: number): number[] {
  const desc = [...counts].sort((a, b) => b - a);
  const out: number[] = [];
  for (let g = 0; g < desc.length / batch; g++) {
    out.push(desc.slice(g * batch, (g + 1) * batch).reduce((a, b) => a + b, 0));
  }
  return out;
}

/** Exhaustive optimum over every k[i] in {0} ∪ [t, G] with sum k <= K. */
function bruteForce(counts: number[][], capacity: number, batch: number, threshold: number) {
  const K = Math.floor(capacity / batch);
  const t = Math.floor(threshold / batch);
  const prefixes = counts.map((c) => {
    const p = [0];
    for (const m of groupMasses(c, batch)) p.push(p[p.length - 1]! + m);
    return p;
  });
  let best = 0;
  const rec = (i: number, used: number, mass: number) => {
    if (i === counts.length) {
      best = Math.max(best, mass);
      return;
    }
    const G = prefixes[i]!.length - 1;
    rec(i + 1, used, mass);
    for (let k = Math.max(1, t); k <= G && used + k <= K; k++) {
      rec(i + 1, used + k, mass + prefixes[i]![k]!);
    }
  };
  rec(0, 0, 0);
  return best;
}

/** The hottest `k` neuron ids (count descending, index ascending), returned ascending. */
function referenceBucket(counts: readonly number[], k: number): number[] {
  const ids = counts.map((_, j) => j).sort((a, b) => counts[b]! - counts[a]! || a - b);
  return ids.slice(0, k).sort((a, b) => a - b);
}

Deno.test("solveGpuIndex() equals the brute-force optimum on seeded random small instances", () => {
  const rand = seededRandom(7);
  for (let trial = 0; trial < 400; trial++) {
    const nLayer = 1 + Math.floor(rand() * 4);
    const batch = 1 + Math.floor(rand() * 3);
    const nGroups = 1 + Math.floor(rand() * 4);
    const maxCount = [1, 3, 10, 1000][trial % 4]!; // small ranges force many ties
    // Every 3rd trial uses fractional counts (exact quarters, so sums stay exact in any order).
    const step = trial % 3 === 0 ? 0.25 : 1;
    const counts = Array.from(
      { length: nLayer },
      () =>
        Array.from({ length: batch * nGroups }, () => step * Math.floor(rand() * (maxCount + 1))),
    );
    const capacity = Math.floor(rand() * (nLayer * nGroups * batch + 2));
    const threshold = trial % 2 === 0 ? 0 : Math.floor(rand() * (nGroups + 1) * batch);
    const sol = solveGpuIndex({ counts, capacityNeurons: capacity, batch, threshold });
    const what = JSON.stringify({ counts, capacity, batch, threshold, got: sol.neuronsPerLayer });
    strictEqual(sol.hotMass, bruteForce(counts, capacity, batch, threshold), what);
    // Feasible: capacity, threshold, whole groups.
    const total = sol.neuronsPerLayer.reduce((a, b) => a + b, 0);
    ok(total <= capacity, what);
    const t = Math.floor(threshold / batch) * batch;
    for (let i = 0; i < nLayer; i++) {
      const k = sol.neuronsPerLayer[i]!;
      ok(k % batch === 0 && (k === 0 || k >= t), what);
      // The hot set is the k hottest neurons, ties by lower index.
      deepStrictEqual([...sol.gpuBucket(i)], referenceBucket(counts[i]!, k), what);
      const idx = sol.gpuIdx(i);
      strictEqual(idx.reduce((a, b) => a + b, 0), k);
      for (const j of sol.gpuBucket(i)) strictEqual(idx[j], 1);
    }
  }
});

/**
 * PowerInfer's solver as gpu-index.md §3 describes it, written out plainly: per layer sort
 * descending, negate, sum groups of `batch`; with threshold 0 the ILP optimum takes the
 * floor(capacity / batch) most negative group values over all layers (zero groups stay out).
 */
function powerInferGreedy(counts: number[][], capacity: number, batch: number): number[] {
  const all: { c: number; layer: number }[] = [];
  counts.forEach((layer, i) => {
    for (const m of groupMasses(layer, batch)) all.push({ c: -m, layer: i });
  });
  all.sort((a, b) => a.c - b.c);
  const out = counts.map(() => 0);
  for (const { c, layer } of all.slice(0, Math.floor(capacity / batch))) {
    if (c < 0) out[layer]! += batch;
  }
  return out;
}

Deno.test("solveGpuIndex() reproduces PowerInfer's per-layer counts (batch 256, threshold 0)", () => {
  const rand = seededRandom(2024);
  for (let trial = 0; trial < 20; trial++) {
    const nLayer = 2 + Math.floor(rand() * 12);
    const nFf = 256 * (1 + Math.floor(rand() * 6));
    // Real-valued skewed counts (no exact ties between groups, so the greedy answer is unique).
    const counts = Array.from({ length: nLayer }, () => {
      const scale = 1 + rand() * 10;
      return Array.from({ length: nFf }, () => scale * Math.pow(rand(), 3) * 1000);
    });
    const capacity = Math.floor(rand() * nLayer * nFf);
    const sol = solveGpuIndex({ counts, capacityNeurons: capacity });
    deepStrictEqual(sol.neuronsPerLayer, powerInferGreedy(counts, capacity, 256));
  }
});

Deno.test("solveGpuIndex() leaves never-active groups on the CPU", () => {
  const counts = [[5, 4, 0, 0], [0, 0, 0, 0]];
  const sol = solveGpuIndex({ counts, capacityNeurons: 8, batch: 2 });
  deepStrictEqual(sol.neuronsPerLayer, [2, 0]);
  strictEqual(sol.hotMass, 9);
  strictEqual(sol.totalMass, 9);
});

Deno.test("solveGpuIndex() breaks ties between layers towards lower layers", () => {
  const counts = [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]];
  deepStrictEqual(solveGpuIndex({ counts, capacityNeurons: 6, batch: 2 }).neuronsPerLayer, [
    4,
    2,
    0,
  ]);
  deepStrictEqual(
    solveGpuIndex({ counts, capacityNeurons: 4, batch: 1, threshold: 2 }).neuronsPerLayer,
    [4, 0, 0],
  );
});

Deno.test("solveGpuIndex() honours the per-layer threshold where greedy would not", () => {
  // Greedy would take 1 group of each layer; with threshold 2 groups the best is layer 1 alone.
  const counts = [[9, 1, 0, 0], [8, 7, 0, 0]];
  const sol = solveGpuIndex({ counts, capacityNeurons: 2, batch: 1, threshold: 2 });
  deepStrictEqual(sol.neuronsPerLayer, [0, 2]);
  strictEqual(sol.hotMass, 15);
  deepStrictEqual(solveGpuIndex({ counts, capacityNeurons: 2, batch: 1 }).neuronsPerLayer, [1, 1]);
});

Deno.test("solveGpuIndex() rejects bad input with GpuIndexError", () => {
  throws(() => solveGpuIndex({ counts: [[1, 2, 3]], capacityNeurons: 2, batch: 2 }), GpuIndexError);
  throws(() => solveGpuIndex({ counts: [[1, NaN]], capacityNeurons: 2, batch: 1 }), GpuIndexError);
  throws(() => solveGpuIndex({ counts: [[1, -1]], capacityNeurons: 2, batch: 1 }), GpuIndexError);
  throws(() => solveGpuIndex({ counts: [[1, 1]], capacityNeurons: -1, batch: 1 }), GpuIndexError);
  throws(() => solveGpuIndex({ counts: [[1, 1]], capacityNeurons: 1, batch: 0 }), GpuIndexError);
});

Deno.test("capacityFromBudget() says by how much an impossible budget is short", () => {
  throws(
    () =>
      capacityFromBudget(1000, [{ part: "attention", byteLength: 800 }, {
        part: "kv cache",
        byteLength: 300,
      }], 10),
    (e: unknown) => e instanceof GpuIndexError && /100 B more than the budget/.test(e.message),
  );
  const b = capacityFromBudget(1100, [{ part: "attention", byteLength: 800 }], 7);
  strictEqual(b.ffnBytes, 300);
  strictEqual(b.capacityNeurons, 42);
});

Deno.test("solveGpuIndex() with a threshold matches a plain O(L·K·G) DP on medium instances", () => {
  const rand = seededRandom(99);
  for (let trial = 0; trial < 10; trial++) {
    const nLayer = 3 + Math.floor(rand() * 10);
    const nGroups = 5 + Math.floor(rand() * 30);
    const counts = Array.from({ length: nLayer }, () => {
      const skew = 1 + rand() * 4;
      return Array.from({ length: nGroups * 2 }, () => Math.floor(Math.pow(rand(), skew) * 500));
    });
    const capacity = Math.floor(rand() * nLayer * nGroups * 2);
    const threshold = 2 * (2 + Math.floor(rand() * nGroups));
    const K = Math.floor(capacity / 2);
    const t = Math.floor(threshold / 2);
    let f = new Array<number>(K + 1).fill(0);
    for (const layer of counts) {
      const p = [0];
      for (const m of groupMasses(layer, 2)) p.push(p[p.length - 1]! + m);
      const g = f.slice();
      for (let c = 0; c <= K; c++) {
        for (let k = t; k <= nGroups && k <= c; k++) g[c] = Math.max(g[c]!, f[c - k]! + p[k]!);
      }
      f = g;
    }
    const sol = solveGpuIndex({ counts, capacityNeurons: capacity, batch: 2, threshold });
    strictEqual(sol.hotMass, f[K], JSON.stringify({ trial, capacity, threshold }));
  }
});
