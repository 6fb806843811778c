import { deepStrictEqual, equal, notDeepStrictEqual, ok, throws } from "node:assert/strict";
import { DEFAULT_SAMPLING, Mt19937, Sampler } from "../src/sampling.ts";

/** Outcomes of `n` samplers (seeds 0..n-1) on the same logits. */
function outcomes(logits: number[], params: ConstructorParameters<typeof Sampler>[0], n = 400) {
  const seen = new Map<number, number>();
  for (let seed = 0; seed < n; seed++) {
    const id = new Sampler({ ...params, seed }).sample(Float32Array.from(logits));
    seen.set(id, (seen.get(id) ?? 0) + 1);
  }
  return seen;
}

const NO_PENALTY = { repeatPenalty: 1, topK: 0, topP: 1, minP: 0, temperature: 1 };

Deno.test("Mt19937 matches std::mt19937 (5489 and the 10000th output)", () => {
  const rng = new Mt19937(5489);
  equal(rng.next(), 3499211612);
  equal(rng.next(), 581869302);
  const r = new Mt19937(5489);
  let v = 0;
  for (let i = 0; i < 10000; i++) v = r.next();
  equal(v, 4123659995);
});

Deno.test("DEFAULT_SAMPLING holds main's defaults", () => {
  deepStrictEqual({ ...DEFAULT_SAMPLING }, {
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
});

Deno.test("Sampler.sample() with temperature 0 picks the first maximum", () => {
  const s = new Sampler({ temperature: 0, repeatPenalty: 1 });
  equal(s.sample(Float32Array.from([1, 5, 2, 5, 5])), 1);
  equal(s.sample(Float32Array.from([-3, -1, -1])), 1);
  // negative temperature is clamped to 0 like main's argument parser
  equal(new Sampler({ temperature: -1, repeatPenalty: 1 }).sample(Float32Array.from([0, 2, 2])), 1);
});

Deno.test("Sampler.sample() top-k keeps only the k largest logits", () => {
  const logits = [1, 4, 3, 0, 3.5, 2];
  const seen = outcomes(logits, { ...NO_PENALTY, topK: 2, temperature: 5 });
  deepStrictEqual([...seen.keys()].sort(), [1, 4]);
  const one = outcomes(logits, { ...NO_PENALTY, topK: 1, temperature: 100 }, 50);
  deepStrictEqual([...one.keys()], [1]);
});

Deno.test("Sampler.sample() top-p keeps the shortest prefix reaching P", () => {
  // probabilities 0.5, 0.3, 0.2
  const logits = [Math.log(0.2), Math.log(0.5), Math.log(0.3)];
  deepStrictEqual([...outcomes(logits, { ...NO_PENALTY, topP: 0.75 }).keys()].sort(), [1, 2]);
  deepStrictEqual([...outcomes(logits, { ...NO_PENALTY, topP: 0.85 }).keys()].sort(), [0, 1, 2]);
  deepStrictEqual([...outcomes(logits, { ...NO_PENALTY, topP: 0.4 }, 50).keys()], [1]);
});

Deno.test("Sampler.sample() min-p drops tokens below P times the best probability", () => {
  const logits = [Math.log(0.2), Math.log(0.5), Math.log(0.3)];
  // 0.5 * 0.5 = 0.25: keeps 0.5 and 0.3, drops 0.2
  deepStrictEqual([...outcomes(logits, { ...NO_PENALTY, minP: 0.5 }).keys()].sort(), [1, 2]);
  deepStrictEqual([...outcomes(logits, { ...NO_PENALTY, minP: 0.39 }).keys()].sort(), [0, 1, 2]);
});

Deno.test("Sampler.sample() temperature sharpens after truncation", () => {
  const logits = [0, 1, 0.5];
  const cold = outcomes(logits, { ...NO_PENALTY, temperature: 0.05 });
  deepStrictEqual([...cold.keys()], [1]);
  const hot = outcomes(logits, { ...NO_PENALTY, temperature: 10 });
  equal(hot.size, 3);
});

Deno.test("Sampler.sample() draws like std::discrete_distribution", () => {
  // seed 5489: outputs 3499211612, 581869302 -> u = (r1 + r2 * 2^32) / 2^64 ~ 0.1355
  equal(new Sampler({ ...NO_PENALTY, seed: 5489 }).sample(Float32Array.from([0, 0])), 0);
  // probabilities 0.1 / 0.9: u < 0.1 is not the case for 0.1355 -> id 1
  equal(
    new Sampler({ ...NO_PENALTY, seed: 5489 }).sample(Float32Array.from([0, Math.log(9)])),
    1,
  );
  // a single candidate consumes no random number
  const s = new Sampler({ ...NO_PENALTY, topK: 1, seed: 5489 });
  equal(s.sample(Float32Array.from([0, 1])), 1);
  equal(s.sample(Float32Array.from([0, 0])), 0);
});

Deno.test("Sampler.accept() penalties cover only the last N accepted tokens", () => {
  const logits = Float32Array.from([0, 2, 1.9, 1.8, -1]);
  const s = new Sampler({ temperature: 0, repeatPenalty: 2, repeatLastN: 2 });
  equal(s.sample(logits), 1);
  s.accept(1);
  equal(s.sample(logits), 2); // 2 / 2 = 1 < 1.9
  s.accept(2);
  equal(s.sample(logits), 3); // both 1 and 2 penalized
  s.accept(3);
  equal(s.sample(logits), 1); // 1 fell out of the window of 2
  s.reset();
  equal(s.sample(logits), 1);
});

Deno.test("Sampler.sample() penalizes negative logits by multiplying", () => {
  const logits = Float32Array.from([-5, -1, -1.5]);
  const s = new Sampler({ temperature: 0, repeatPenalty: 2, repeatLastN: 4 });
  s.accept(1);
  equal(s.sample(logits), 2); // -1 * 2 = -2 < -1.5
});

Deno.test("Sampler history starts as 64 zeros like main", () => {
  // token 0 is penalized before anything is accepted: frequency 64 * 0.1 = 6.4
  const s = new Sampler({ temperature: 0, repeatPenalty: 1, frequencyPenalty: 0.1 });
  equal(s.sample(Float32Array.from([10, 4])), 1);
  const off = new Sampler({
    temperature: 0,
    repeatPenalty: 1,
    frequencyPenalty: 0.1,
    repeatLastN: 0,
  });
  equal(off.sample(Float32Array.from([10, 4])), 0);
});

Deno.test("Sampler.sample() presence and frequency penalties subtract", () => {
  const logits = Float32Array.from([-100, 3, 2.5]);
  const p = new Sampler({ temperature: 0, repeatPenalty: 1, presencePenalty: 0.6 });
  p.accept(1);
  equal(p.sample(logits), 2);
  const f = new Sampler({ temperature: 0, repeatPenalty: 1, frequencyPenalty: 0.2 });
  f.accept(1);
  f.accept(1);
  equal(f.sample(logits), 1); // 3 - 0.4 = 2.6 > 2.5
  f.accept(1);
  equal(f.sample(logits), 2); // 3 - 0.6 = 2.4
});

Deno.test("Sampler with the same seed yields the same sequence", () => {
  const run = (seed: number) => {
    const s = new Sampler({ seed });
    const out: number[] = [];
    for (let step = 0; step < 50; step++) {
      const logits = Float32Array.from({ length: 300 }, (_, i) => Math.sin(i * 0.37 + step) * 3);
      const id = s.sample(logits);
      s.accept(id);
      out.push(id);
    }
    return out;
  };
  deepStrictEqual(run(42), run(42));
  notDeepStrictEqual(run(42), run(43));
  const s = new Sampler({ seed: 7 });
  const logits = Float32Array.from({ length: 100 }, (_, i) => Math.cos(i));
  const first = [s.sample(logits), s.sample(logits), s.sample(logits)];
  s.reset();
  deepStrictEqual([s.sample(logits), s.sample(logits), s.sample(logits)], first);
});

Deno.test("Sampler rejects invalid parameters with RangeError", () => {
  throws(() => new Sampler({ temperature: NaN }), RangeError);
  throws(() => new Sampler({ topK: 1.5 }), RangeError);
  throws(() => new Sampler({ topP: Infinity }), RangeError);
  throws(() => new Sampler({ repeatPenalty: 0 }), RangeError);
  throws(() => new Sampler({ repeatLastN: -2 }), RangeError);
  throws(() => new Sampler({ seed: 2 ** 32 }), RangeError);
  throws(() => new Sampler({ seed: -5 }), RangeError);
  throws(() => new Sampler().sample(new Float32Array(0)), RangeError);
  ok(new Sampler({ seed: -1 }).params.seed >= 0);
  equal(new Sampler({ temperature: undefined, topK: 5 }).params.temperature, 0.8);
});
