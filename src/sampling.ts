/**
 * Token sampling in PowerInfer `main`'s order (spec/cli.md "Sampling"): repetition / presence /
 * frequency penalties over the last N accepted tokens, then either greedy argmax (temperature 0)
 * or top-k → top-p → min-p → temperature → a draw from a seeded `std::mt19937`, reproduced bit for
 * bit, including libstdc++'s `std::discrete_distribution`.
 *
 * Arithmetic on logits and probabilities is done in f32 (`Math.fround`) like the C++ code; the
 * draw itself is in f64 like libstdc++.
 *
 * @module
 */

/** Sampling settings; see {@link DEFAULT_SAMPLING} for PowerInfer `main`'s defaults. */
export interface SamplingParams {
  /** Divides the logits before the draw; 0 (or negative, clamped like `main`) = greedy argmax. */
  temperature: number;
  /** Keep the k most likely tokens; ≤ 0 keeps the whole vocabulary. */
  topK: number;
  /** Keep the shortest prefix whose probability mass is ≥ topP; ≥ 1 disables it. */
  topP: number;
  /** Keep tokens whose probability is ≥ minP · p_max; ≤ 0 disables it. */
  minP: number;
  /** Logits of recent tokens: positive ones divided by it, others multiplied; 1 = off. */
  repeatPenalty: number;
  /** How many of the last accepted tokens the penalties look at; 0 = off, −1 = 64. */
  repeatLastN: number;
  /** Subtracted once from the logit of every token present in the window. */
  presencePenalty: number;
  /** Subtracted `count` times from the logit of every token present in the window. */
  frequencyPenalty: number;
  /** Seed of the `mt19937` generator, 0 … 2³²−1; −1 (or 2³²−1) = seeded from the clock. */
  seed: number;
}

/** PowerInfer `main`'s sampling defaults (spec/cli.md). The seed −1 means "from the clock". */
export const DEFAULT_SAMPLING: SamplingParams = Object.freeze({
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1.1,
  repeatLastN: 64,
  presencePenalty: 0,
  frequencyPenalty: 0,
  seed: -1,
});

/** Size of `main`'s token history (`n_prev`); it starts filled with token 0. */
const N_PREV = 64;
const RANDOM_SEED = 0xffffffff;
const TWO_POW_32 = 4294967296;

/**
 * The 32-bit Mersenne Twister, identical to C++ `std::mt19937`.
 *
 * @example First output for the default seed 5489 is 3499211612
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { Mt19937 } from "./sampling.ts";
 * equal(new Mt19937(5489).next(), 3499211612);
 * ```
 */
export class Mt19937 {
  #mt = new Uint32Array(624);
  #index = 624;

  /** @param seed Any 32-bit unsigned seed. */
  constructor(seed: number) {
    const mt = this.#mt;
    mt[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  /** @returns The next 32-bit output as a non-negative number. */
  next(): number {
    const mt = this.#mt;
    if (this.#index >= 624) {
      for (let i = 0; i < 624; i++) {
        const y = (mt[i]! & 0x80000000) | (mt[(i + 1) % 624]! & 0x7fffffff);
        let v = mt[(i + 397) % 624]! ^ (y >>> 1);
        if (y & 1) v ^= 0x9908b0df;
        mt[i] = v;
      }
      this.#index = 0;
    }
    let y = mt[this.#index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** `std::generate_canonical<double, 53>` over two outputs: a double in [0, 1). */
  nextCanonical(): number {
    const lo = this.next();
    const hi = this.next();
    const u = (lo + hi * TWO_POW_32) / (TWO_POW_32 * TWO_POW_32);
    return u >= 1 ? 1 - Number.EPSILON / 2 : u;
  }
}

function validate(p: SamplingParams): SamplingParams {
  const finite = (name: keyof SamplingParams) => {
    if (typeof p[name] !== "number" || !Number.isFinite(p[name])) {
      throw new RangeError(`Sampling parameter ${name} must be a finite number, got ${p[name]}`);
    }
  };
  for (const key of Object.keys(DEFAULT_SAMPLING) as (keyof SamplingParams)[]) finite(key);
  if (!Number.isInteger(p.topK)) {
    throw new RangeError(`Sampling parameter topK must be an integer, got ${p.topK}`);
  }
  if (!Number.isInteger(p.repeatLastN) || p.repeatLastN < -1) {
    throw new RangeError(
      `Sampling parameter repeatLastN must be an integer >= -1, got ${p.repeatLastN}`,
    );
  }
  if (!(p.repeatPenalty > 0)) {
    throw new RangeError(
      `Sampling parameter repeatPenalty must be greater than 0, got ${p.repeatPenalty}`,
    );
  }
  if (!Number.isInteger(p.seed) || p.seed < -1 || p.seed > RANDOM_SEED) {
    throw new RangeError(
      `Sampling parameter seed must be an integer in [-1, 4294967295], got ${p.seed}`,
    );
  }
  return p;
}

/**
 * Samples token ids from logits the way PowerInfer `main` does, keeping the penalty history and
 * the seeded generator between calls. `sample()` does not record its result: call `accept(id)`
 * for every prompt token fed to the model and for every sampled token, like `main`.
 *
 * @example Temperature 0 picks the first maximum; penalties act on accepted tokens
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { Sampler } from "./sampling.ts";
 * const s = new Sampler({ temperature: 0, repeatPenalty: 2, repeatLastN: 4 });
 * const logits = new Float32Array([0, 3, 1, 3]);
 * equal(s.sample(logits), 1);
 * s.accept(1);
 * equal(s.sample(logits), 3); // 3 / 2 = 1.5 for the repeated token 1
 * ```
 */
export class Sampler {
  /** The validated settings (negative temperature already clamped to 0). */
  readonly params: Readonly<SamplingParams>;
  #history: number[] = [];
  #rng!: Mt19937;

  /**
   * @param params Overrides of {@link DEFAULT_SAMPLING}; `undefined` values and unknown keys
   * are ignored (so generation options can be passed through as they are).
   * @throws {RangeError} If a parameter is not finite, `topK`/`repeatLastN` not an integer,
   * `repeatLastN` < −1, `repeatPenalty` ≤ 0, or `seed` outside [−1, 2³²−1].
   */
  constructor(params: Partial<SamplingParams> = {}) {
    const merged: SamplingParams = { ...DEFAULT_SAMPLING };
    for (const [key, value] of Object.entries(params)) {
      // Keys left undefined keep their default; unknown keys are ignored.
      if (value !== undefined && key in DEFAULT_SAMPLING) {
        merged[key as keyof SamplingParams] = value;
      }
    }
    validate(merged);
    if (merged.temperature < 0) merged.temperature = 0;
    if (merged.seed === -1 || merged.seed === RANDOM_SEED) {
      merged.seed = Math.floor(Date.now() / 1000) >>> 0;
    }
    this.params = Object.freeze(merged);
    this.reset();
  }

  /** Penalty window length actually used (−1 → 64). */
  get #lastN(): number {
    return this.params.repeatLastN < 0 ? N_PREV : this.params.repeatLastN;
  }

  /** Records a token (prompt or generated) in the penalty history. */
  accept(id: number): void {
    this.#history.push(id);
    const size = Math.max(N_PREV, this.#lastN);
    if (this.#history.length > size) this.#history.splice(0, this.#history.length - size);
  }

  /** Clears the history (back to 64 zeros, like `main`) and reseeds the generator. */
  reset(): void {
    this.#history = new Array(Math.max(N_PREV, this.#lastN)).fill(0);
    this.#rng = new Mt19937(this.params.seed);
  }

  /**
   * Picks the next token id. The logits are not modified.
   *
   * @param logits One logit per vocabulary id (f32).
   * @returns The chosen token id.
   * @throws {RangeError} If `logits` is empty.
   */
  sample(logits: Float32Array): number {
    const nVocab = logits.length;
    if (nVocab === 0) throw new RangeError("Cannot sample from empty logits");
    const p = this.params;
    const work = logits.slice();
    this.#applyPenalties(work);

    if (p.temperature === 0) {
      let best = 0;
      for (let i = 1; i < nVocab; i++) if (work[i]! > work[best]!) best = i;
      return best;
    }

    const minKeep = 1;
    // top-k: candidates sorted by logit descending (ties: smaller id first).
    let k = p.topK <= 0 ? nVocab : Math.min(Math.max(p.topK, minKeep), nVocab);
    let ids = topKIds(work, k);
    let cand = Float32Array.from(ids, (id) => work[id]!);

    // top-p over the softmax of the kept candidates.
    // The reference holds P, min-P and the temperature as f32.
    const topP = Math.fround(p.topP);
    if (topP < 1) {
      const probs = softmax(cand);
      let cum = 0;
      let last = k;
      for (let i = 0; i < k; i++) {
        cum = Math.fround(cum + probs[i]!);
        if (cum >= topP && i + 1 >= minKeep) {
          last = i + 1;
          break;
        }
      }
      k = last;
    }

    // min-p relative to the most likely remaining candidate.
    if (p.minP > 0) {
      const probs = softmax(cand.subarray(0, k));
      const bound = Math.fround(Math.fround(p.minP) * probs[0]!);
      let i = 1;
      for (; i < k; i++) if (probs[i]! < bound && i >= minKeep) break;
      k = i;
    }

    ids = ids.subarray(0, k);
    cand = cand.subarray(0, k);
    const temp = Math.fround(p.temperature);
    for (let i = 0; i < k; i++) cand[i] = Math.fround(cand[i]! / temp);
    return ids[this.#draw(softmax(cand))]!;
  }

  #applyPenalties(work: Float32Array): void {
    const p = this.params;
    const lastN = this.#lastN;
    if (lastN === 0) return;
    if (p.repeatPenalty === 1 && p.frequencyPenalty === 0 && p.presencePenalty === 0) return;
    const counts = new Map<number, number>();
    const h = this.#history;
    for (let i = h.length - lastN; i < h.length; i++) {
      counts.set(h[i]!, (counts.get(h[i]!) ?? 0) + 1);
    }
    const repeat = Math.fround(p.repeatPenalty);
    const freq = Math.fround(p.frequencyPenalty);
    const presence = Math.fround(p.presencePenalty);
    for (const [id, count] of counts) {
      if (id < 0 || id >= work.length) continue;
      let l = work[id]!;
      l = l <= 0 ? Math.fround(l * repeat) : Math.fround(l / repeat);
      l = Math.fround(l - Math.fround(Math.fround(count * freq) + presence));
      work[id] = l;
    }
  }

  /** libstdc++ `std::discrete_distribution` with `generate_canonical<double, 53>`. */
  #draw(probs: Float32Array): number {
    const n = probs.length;
    if (n < 2) return 0;
    let sum = 0;
    for (let i = 0; i < n; i++) sum += probs[i]!;
    const cumulative = new Float64Array(n);
    let acc = 0;
    for (let i = 0; i < n; i++) {
      acc += probs[i]! / sum;
      cumulative[i] = acc;
    }
    cumulative[n - 1] = 1;
    const u = this.#rng.nextCanonical();
    // lower_bound: first cumulative >= u
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cumulative[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** f32 softmax like `llama_sample_softmax` over candidates already sorted descending. */
function softmax(logits: Float32Array): Float32Array {
  const out = new Float32Array(logits.length);
  const max = logits[0]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = Math.fround(Math.exp(Math.fround(logits[i]! - max)));
    out[i] = e;
    sum = Math.fround(sum + e);
  }
  for (let i = 0; i < out.length; i++) out[i] = Math.fround(out[i]! / sum);
  return out;
}

/** Ids of the k largest values, sorted by value descending, ties by smaller id first. */
function topKIds(values: Float32Array, k: number): Int32Array {
  const n = values.length;
  const before = (a: number, b: number) =>
    values[a]! > values[b]! || (values[a] === values[b] && a < b);
  let ids: number[];
  if (k * 8 >= n) {
    ids = Array.from({ length: n }, (_, i) => i);
  } else {
    // Min-heap (by "before" order) of the best k seen so far.
    const heap: number[] = [];
    const up = (i: number) => {
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!before(heap[parent]!, heap[i]!)) break;
        [heap[parent], heap[i]] = [heap[i]!, heap[parent]!];
        i = parent;
      }
    };
    const down = (i: number) => {
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let worst = i;
        if (l < heap.length && before(heap[worst]!, heap[l]!)) worst = l;
        if (r < heap.length && before(heap[worst]!, heap[r]!)) worst = r;
        if (worst === i) return;
        [heap[worst], heap[i]] = [heap[i]!, heap[worst]!];
        i = worst;
      }
    };
    for (let id = 0; id < n; id++) {
      if (heap.length < k) {
        heap.push(id);
        up(heap.length - 1);
      } else if (before(id, heap[0]!)) {
        heap[0] = id;
        down(0);
      }
    }
    ids = heap;
  }
  ids.sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0));
  return Int32Array.from(ids.slice(0, k));
}
