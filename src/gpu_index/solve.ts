/**
 * The hot-neuron solver: which neurons of each layer's FFN go to the GPU (spec:
 * shared/spec/gpu-index.md §2.4 and §3).
 *
 * Model of the problem, as PowerInfer's `powerinfer-py` states it: the neurons of layer `i` are
 * ordered hottest first (activation count descending; ties by ascending neuron index, which makes
 * the result deterministic) and cut into groups of `batch` consecutive neurons. `c[i][g]` is the
 * activation mass of group `g` (the sum of its counts), so `c[i][0] >= c[i][1] >= ...`. We choose a
 * number of groups `k[i]` per layer (the hot neurons of layer `i` are then its `batch * k[i]`
 * hottest ones) to
 *
 *     maximise  sum_i P_i(k[i])          where P_i(k) = c[i][0] + ... + c[i][k-1]
 *     subject to  sum_i k[i] <= K = floor(capacityNeurons / batch)
 *                 k[i] = 0  or  t <= k[i] <= G_i,   t = floor(threshold / batch)
 *
 * (PowerInfer's ILP with binary variables x[i][g], y[i] is the same problem: any optimal x can be
 * swapped into a prefix of each layer's groups without losing mass, because the groups are sorted.)
 *
 * Two exact algorithms:
 *
 * - `t <= 1` (the default, threshold 0): the per-layer constraint is vacuous and the problem is a
 *   unit-weight knapsack over concave prefix sums. **Exchange argument**: let S be the multiset of
 *   the K largest positive group masses over all layers (ties: lower layer, then lower group first).
 *   (1) S is a feasible choice: within a layer the masses are non-increasing, so the chosen groups
 *   of each layer form a prefix (if group g is in S, every g' < g has c >= c[g] and precedes it in
 *   the tie order, so it is in S too). (2) Any feasible choice T of prefixes with |T| <= K can be
 *   turned into S without losing mass: while T != S, take an element s of S \ T and an element
 *   u of T \ S (or an empty slot when |T| < K); by the choice of S, c(s) >= c(u) (or c(s) > 0 for
 *   an empty slot), so replacing u by s does not lower the total. Each swap moves T one element
 *   closer to S, hence mass(S) >= mass(T). Groups of zero mass are never taken (they add nothing,
 *   and PowerInfer's ILP leaves them out too). Cost: one sort of the group masses.
 *
 * - `t >= 2`: the feasible set of each layer, {0} ∪ [t, G_i], is not convex, so we use dynamic
 *   programming over layers and the number of groups used: F_i(c) = best mass of layers < i using
 *   at most c groups; F_{i+1}(c) = max(F_i(c), max_{t<=k<=min(G_i,c)} F_i(c-k) + P_i(k)). Because
 *   P_i is concave on its interval, the matrix A[c][j] = F_i(j) + P_i(c-j) satisfies the Monge
 *   inequality A[c1][j1] + A[c2][j2] >= A[c1][j2] + A[c2][j1] for c1 < c2, j1 < j2 (the four
 *   arguments of P_i satisfy a <= b, b' <= d with b + b' = a + d, and concavity gives
 *   P(b) + P(b') >= P(a) + P(d)), so the largest maximising j is non-decreasing in c and
 *   divide-and-conquer finds every row maximum in O(K log K) per layer. On ties the DP keeps the
 *   smaller k for the later layer (mass goes to lower layers first, as in the greedy case).
 *   Exact for integer counts (sums below 2^53); for real-valued counts up to float rounding.
 *
 * Neuron cost and capacity: {@link capacityFromBudget} turns a VRAM budget in bytes, minus the
 * dense blocks that go to the GPU first, into a neuron capacity.
 *
 * @module
 */

import { GpuIndexError } from "../errors.ts";

/** PowerInfer's default group size (neurons per ILP variable). */
export const DEFAULT_GPU_INDEX_BATCH = 256;

/** Activation counts of one layer: element j = how often neuron j fired. */
export type LayerCounts = ArrayLike<number>;

/** Input of {@link solveGpuIndex}. */
export interface GpuIndexProblem {
  /** Per layer, per neuron activation counts (`[nLayer][nFf]`); finite and non-negative. */
  readonly counts: readonly LayerCounts[];
  /** How many neurons may go to the GPU in total (all layers together). */
  readonly capacityNeurons: number;
  /** Neurons per group; every layer's neuron count must be a multiple. Default 256. */
  readonly batch?: number;
  /** A layer that gets any hot neurons gets at least this many (rounded down to groups). Default 0. */
  readonly threshold?: number;
}

/** The solver's answer. */
export interface GpuIndexSolution {
  /** Hot neurons per layer (a multiple of `batch`). */
  readonly neuronsPerLayer: number[];
  /** Activation mass of the hot neurons, per layer. */
  readonly hotMassPerLayer: number[];
  /** Sum of `hotMassPerLayer`. */
  readonly hotMass: number;
  /** Activation mass of every neuron (hot or not). */
  readonly totalMass: number;
  /** Groups the capacity allowed (`floor(capacityNeurons / batch)`). */
  readonly capacityGroups: number;
  readonly batch: number;
  readonly threshold: number;
  /** `gpu_idx` of layer `i`: 1 for hot neurons (int32, as stored in `.gpuidx` files). */
  gpuIdx(layer: number): Int32Array;
  /** `gpu_bucket` of layer `i`: the hot neuron ids, ascending. */
  gpuBucket(layer: number): Int32Array;
}

/**
 * Chooses the hot neurons of every layer so that the activation mass on the GPU is maximal
 * (see the module doc for the model and the proofs).
 *
 * @param problem Counts, capacity, batch and threshold.
 * @returns Per-layer hot-neuron counts and the `gpu_idx` / `gpu_bucket` arrays.
 * @throws {GpuIndexError} If the counts are not finite and non-negative, a layer's size is not a
 * multiple of `batch`, or `capacityNeurons`, `batch` or `threshold` is invalid.
 *
 * @example Two layers, one group of capacity: the hotter group wins
 * ```ts
 * import { deepStrictEqual } from "node:assert/strict";
 * import { solveGpuIndex } from "./solve.ts";
 * const sol = solveGpuIndex({ counts: [[1, 0, 2, 0], [5, 5, 0, 1]], capacityNeurons: 2, batch: 2 });
 * deepStrictEqual(sol.neuronsPerLayer, [0, 2]);
 * deepStrictEqual([...sol.gpuBucket(1)], [0, 1]);
 * ```
 */
export function solveGpuIndex(problem: GpuIndexProblem): GpuIndexSolution {
  const batch = problem.batch ?? DEFAULT_GPU_INDEX_BATCH;
  const threshold = problem.threshold ?? 0;
  const { counts, capacityNeurons } = problem;
  if (!Number.isSafeInteger(batch) || batch < 1) {
    throw new GpuIndexError(`Invalid batch ${batch}: expected a positive integer`);
  }
  if (!(threshold >= 0) || !Number.isFinite(threshold)) {
    throw new GpuIndexError(`Invalid threshold ${threshold}: expected a number >= 0`);
  }
  if (!(capacityNeurons >= 0) || !Number.isFinite(capacityNeurons)) {
    throw new GpuIndexError(`Invalid capacity ${capacityNeurons}: expected a number >= 0`);
  }
  const capacityGroups = Math.floor(capacityNeurons / batch);
  const t = Math.floor(threshold / batch);

  // Per layer: counts sorted descending, and the group masses c[i][g].
  const sorted: Float64Array[] = [];
  const groupMass: Float64Array[] = [];
  let totalMass = 0;
  for (let i = 0; i < counts.length; i++) {
    const layer = counts[i]!;
    const n = layer.length;
    if (n % batch !== 0) {
      throw new GpuIndexError(
        `Layer ${i} has ${n} neurons: expected a multiple of the batch ${batch} (pass another --batch)`,
      );
    }
    const values = sortAscending(layer, i); // read backwards for descending
    const groups = new Float64Array(n / batch);
    for (let g = 0; g < groups.length; g++) {
      let s = 0;
      for (let r = 0; r < batch; r++) s += values[n - 1 - (g * batch + r)]!;
      groups[g] = s;
      totalMass += s;
    }
    sorted.push(values);
    groupMass.push(groups);
  }

  const groupsPerLayer = t <= 1
    ? chooseGreedy(groupMass, capacityGroups)
    : chooseDp(groupMass, capacityGroups, t);

  const neuronsPerLayer = groupsPerLayer.map((k) => k * batch);
  const hotMassPerLayer = groupsPerLayer.map((k, i) => {
    let s = 0;
    for (let g = 0; g < k; g++) s += groupMass[i]![g]!;
    return s;
  });
  const hotMass = hotMassPerLayer.reduce((a, b) => a + b, 0);

  const bucketCache = new Map<number, Int32Array>();
  const gpuBucket = (layer: number): Int32Array => {
    if (!Number.isInteger(layer) || layer < 0 || layer >= counts.length) {
      throw new RangeError(`Layer ${layer} out of range [0, ${counts.length})`);
    }
    let bucket = bucketCache.get(layer);
    if (!bucket) {
      bucket = hottestNeurons(counts[layer]!, sorted[layer]!, neuronsPerLayer[layer]!);
      bucketCache.set(layer, bucket);
    }
    return bucket;
  };
  return {
    neuronsPerLayer,
    hotMassPerLayer,
    hotMass,
    totalMass,
    capacityGroups,
    batch,
    threshold,
    gpuBucket: (layer) => gpuBucket(layer).slice(),
    gpuIdx: (layer) => {
      const idx = new Int32Array(counts[layer]?.length ?? 0);
      for (const j of gpuBucket(layer)) idx[j] = 1;
      return idx;
    },
  };
}

/**
 * The counts of one layer sorted ascending, validated (finite, >= 0). Counts are usually integer
 * token counts or float32 values: those are radix-sorted as u32 keys (integers below 2^32
 * directly; float32 values through their bit patterns, which order like the values when
 * non-negative), a few times faster than a comparison sort; anything else uses the built-in sort.
 */
function sortAscending(layer: LayerCounts, layerIndex: number): Float64Array {
  const n = layer.length;
  const values = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    const v = layer[j]!;
    if (!(v >= 0) || v === Infinity) {
      throw new GpuIndexError(
        `Activation count ${v} of layer ${layerIndex} neuron ${j}: expected a finite number >= 0`,
      );
    }
    values[j] = v;
  }
  return sortNonNegative(values);
}

/** Sorts non-negative finite values ascending in place (radix sort when they fit u32/f32 keys). */
function sortNonNegative(values: Float64Array): Float64Array {
  const n = values.length;
  let allU32 = true;
  let allF32 = true;
  for (let j = 0; j < n && (allU32 || allF32); j++) {
    const v = values[j]!;
    if (allU32 && (v > 0xffffffff || v !== Math.floor(v))) allU32 = false;
    if (allF32 && Math.fround(v) !== v) allF32 = false;
  }
  if (allU32) {
    const keys = radixSortU32(Uint32Array.from(values));
    for (let j = 0; j < n; j++) values[j] = keys[j]!;
  } else if (allF32) {
    const f32 = Float32Array.from(values);
    const keys = radixSortU32(new Uint32Array(f32.buffer));
    const sortedF32 = new Float32Array(keys.buffer, keys.byteOffset, n);
    for (let j = 0; j < n; j++) values[j] = sortedF32[j]!;
  } else {
    values.sort();
  }
  return values;
}

/** LSD radix sort of u32 keys, 3 passes of 11 bits; returns a sorted array (maybe `keys`). */
function radixSortU32(keys: Uint32Array<ArrayBuffer>): Uint32Array<ArrayBuffer> {
  const n = keys.length;
  let src = keys;
  let dst = new Uint32Array(n);
  const count = new Uint32Array(2048);
  for (let shift = 0; shift < 32; shift += 11) {
    count.fill(0);
    for (let j = 0; j < n; j++) count[(src[j]! >>> shift) & 2047]!++;
    if (count[(src[0]! >>> shift) & 2047] === n) continue; // every key shares this digit
    let sum = 0;
    for (let d = 0; d < 2048; d++) {
      const c = count[d]!;
      count[d] = sum;
      sum += c;
    }
    for (let j = 0; j < n; j++) {
      const k = src[j]!;
      dst[count[(k >>> shift) & 2047]!++] = k;
    }
    [src, dst] = [dst, src];
  }
  return src;
}

/**
 * The `k` hottest neuron ids of one layer, ascending: every neuron whose count exceeds the k-th
 * largest value, then the lowest-index neurons equal to it.
 */
function hottestNeurons(counts: LayerCounts, sortedAsc: Float64Array, k: number): Int32Array {
  const out = new Int32Array(k);
  if (k === 0) return out;
  const n = sortedAsc.length;
  const cut = sortedAsc[n - k]!;
  let above = 0;
  for (let j = n - 1; j >= n - k && sortedAsc[j]! > cut; j--) above++;
  let ties = k - above;
  let w = 0;
  for (let j = 0; j < counts.length; j++) {
    const v = counts[j]!;
    if (v > cut) out[w++] = j;
    else if (v === cut && ties > 0) {
      out[w++] = j;
      ties--;
    }
  }
  return out;
}

/** Threshold <= 1 group: the K largest positive group masses (exchange argument in module doc). */
function chooseGreedy(groupMass: Float64Array[], capacityGroups: number): number[] {
  let nPositive = 0;
  for (const groups of groupMass) for (const c of groups) if (c > 0) nPositive++;
  const taken = groupMass.map(() => 0);
  if (capacityGroups >= nPositive) {
    // Everything positive fits.
    return groupMass.map((groups) => countAbove(groups, 0));
  }
  if (capacityGroups === 0) return taken;
  const all = new Float64Array(nPositive);
  let w = 0;
  for (const groups of groupMass) for (const c of groups) if (c > 0) all[w++] = c;
  sortNonNegative(all);
  const cut = all[nPositive - capacityGroups]!; // the K-th largest mass
  let left = capacityGroups;
  for (let i = 0; i < groupMass.length; i++) {
    taken[i] = countAbove(groupMass[i]!, cut);
    left -= taken[i]!;
  }
  // Ties at the cut: lower layers first; within a layer they follow the strictly larger groups.
  for (let i = 0; i < groupMass.length && left > 0; i++) {
    const groups = groupMass[i]!;
    while (left > 0 && taken[i]! < groups.length && groups[taken[i]!] === cut) {
      taken[i]!++;
      left--;
    }
  }
  return taken;
}

/** Number of leading entries of a non-increasing array that are > `cut` (binary search). */
function countAbove(desc: Float64Array, cut: number): number {
  let lo = 0;
  let hi = desc.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (desc[mid]! > cut) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Threshold >= 2 groups: DP over layers with a monotone (Monge) row-maximum search. */
function chooseDp(groupMass: Float64Array[], capacityGroups: number, t: number): number[] {
  const nLayer = groupMass.length;
  const totalGroups = groupMass.reduce((a, g) => a + g.length, 0);
  const K = Math.min(capacityGroups, totalGroups);
  let prev = new Float64Array(K + 1); // F_0(c) = 0
  let next = new Float64Array(K + 1);
  const choice: Int32Array[] = []; // per layer, per c: groups taken by that layer
  const prefix = new Float64Array(Math.max(1, ...groupMass.map((g) => g.length + 1)));
  for (let i = 0; i < nLayer; i++) {
    const groups = groupMass[i]!;
    const G = groups.length;
    prefix[0] = 0;
    for (let g = 0; g < G; g++) prefix[g + 1] = prefix[g]! + groups[g]!;
    const pick = new Int32Array(K + 1);
    // Row c: maximise prev[j] + prefix[c - j] over j in [max(0, c - G), c - t]; rows c < t have
    // no valid j. Largest argmax is monotone in c (Monge), so divide and conquer over rows.
    const bestJ = new Int32Array(K + 1).fill(-1);
    const bestV = new Float64Array(K + 1).fill(-Infinity);
    if (G >= t && K >= t) {
      const stack: number[] = [t, K, 0, K - t]; // rows [cLo, cHi], columns [jLo, jHi]
      while (stack.length > 0) {
        const jHi = stack.pop()!;
        const jLo = stack.pop()!;
        const cHi = stack.pop()!;
        const cLo = stack.pop()!;
        if (cLo > cHi) continue;
        const c = (cLo + cHi) >>> 1;
        const from = Math.max(jLo, c - G, 0);
        const to = Math.min(jHi, c - t);
        let bj = -1;
        let bv = -Infinity;
        for (let j = from; j <= to; j++) {
          const v = prev[j]! + prefix[c - j]!;
          if (v >= bv) { // >=: the largest j (fewest groups for this layer) wins ties
            bv = v;
            bj = j;
          }
        }
        bestJ[c] = bj;
        bestV[c] = bv;
        const split = bj < 0 ? from : bj;
        stack.push(cLo, c - 1, jLo, bj < 0 ? jHi : split);
        stack.push(c + 1, cHi, bj < 0 ? jLo : split, jHi);
      }
    }
    for (let c = 0; c <= K; c++) {
      // Taking nothing from this layer wins ties (keeps mass in lower layers).
      if (bestJ[c]! >= 0 && bestV[c]! > prev[c]!) {
        next[c] = bestV[c]!;
        pick[c] = c - bestJ[c]!;
      } else {
        next[c] = prev[c]!;
        pick[c] = 0;
      }
    }
    choice.push(pick);
    [prev, next] = [next, prev];
  }
  const taken = new Array<number>(nLayer).fill(0);
  let c = K;
  for (let i = nLayer - 1; i >= 0; i--) {
    const k = choice[i]![c]!;
    taken[i] = k;
    c -= k;
  }
  return taken;
}

/** One block that goes to the GPU before any FFN neuron (for the plan printout). */
export interface DenseItem {
  /** What it is: "attention", "predictor", "norms", "output", "kv cache", "scratch", ... */
  readonly part: string;
  readonly byteLength: number;
  /** How it was counted (tensor count, formula). */
  readonly detail?: string;
}

/** Budget arithmetic of {@link capacityFromBudget}. */
export interface GpuBudget {
  readonly budgetBytes: number;
  readonly dense: readonly DenseItem[];
  readonly denseBytes: number;
  /** Bytes left for FFN neurons after the dense blocks. */
  readonly ffnBytes: number;
  /** Bytes one hot neuron costs on the GPU (its up, gate and down rows plus its bucket entry). */
  readonly neuronBytes: number;
  /** `floor(ffnBytes / neuronBytes)`. */
  readonly capacityNeurons: number;
}

/**
 * Turns a VRAM budget in bytes into a neuron capacity: the dense blocks go first, each hot
 * neuron then costs `neuronBytes`.
 *
 * @param budgetBytes The whole VRAM budget.
 * @param dense Blocks that must be on the GPU before any FFN neuron (itemized in the plan).
 * @param neuronBytes GPU bytes of one hot neuron.
 * @returns The budget split.
 * @throws {GpuIndexError} If the dense blocks alone exceed the budget (the message says by how much).
 *
 * @example A budget that leaves room for 10 neurons
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { capacityFromBudget } from "./solve.ts";
 * const b = capacityFromBudget(1000, [{ part: "attention", byteLength: 400 }], 60);
 * strictEqual(b.capacityNeurons, 10);
 * strictEqual(b.ffnBytes, 600);
 * ```
 */
export function capacityFromBudget(
  budgetBytes: number,
  dense: readonly DenseItem[],
  neuronBytes: number,
): GpuBudget {
  if (!(budgetBytes >= 0) || !Number.isFinite(budgetBytes)) {
    throw new GpuIndexError(`Invalid VRAM budget ${budgetBytes} bytes: expected a number >= 0`);
  }
  if (!(neuronBytes > 0)) {
    throw new GpuIndexError(`Invalid neuron cost ${neuronBytes} bytes: expected > 0`);
  }
  const denseBytes = dense.reduce((a, d) => a + d.byteLength, 0);
  if (denseBytes > budgetBytes) {
    const parts = dense.map((d) => `${d.part} ${formatBytes(d.byteLength)}`).join(", ");
    throw new GpuIndexError(
      `VRAM budget ${formatBytes(budgetBytes)} is too small: the dense blocks alone need ${
        formatBytes(denseBytes)
      } (${parts}), ${formatBytes(denseBytes - budgetBytes)} more than the budget`,
    );
  }
  const ffnBytes = budgetBytes - denseBytes;
  return {
    budgetBytes,
    dense,
    denseBytes,
    ffnBytes,
    neuronBytes,
    capacityNeurons: Math.floor(ffnBytes / neuronBytes),
  };
}

/** `1234567` -> `"1.18 MiB (1234567 B)"`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(2)} ${units[u]} (${n} B)`;
}
