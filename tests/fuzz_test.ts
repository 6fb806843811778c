// Seeded fuzz of every registered parser (tasks/fuzz_targets.ts): each mutated input parses or
// throws a PowerInferError subclass; never another exception, a hang or a huge allocation.
import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import { runFuzz } from "../tasks/fuzz.ts";
import { FUZZ_TARGETS, GGUF_FUZZ_TARGET, registerFuzzTarget } from "../tasks/fuzz_targets.ts";

/** Every target gets at least the 2,000 cases issue 3 asks for (cases go round-robin). */
const MIN_CASES_PER_TARGET = 2000;
const CASES = MIN_CASES_PER_TARGET * FUZZ_TARGETS.length;
/** The parsers issues 3, 7 and 8 put under the fuzz test; dropping one must fail here. */
const EXPECTED_TARGETS = [
  "gguf",
  "gpuidx",
  "activation-pt",
  "torch",
  "safetensors",
  "sentencepiece",
  "tokenizer.json",
];

Deno.test(`runFuzz() ${CASES} seeded cases give typed errors or valid parses only`, async () => {
  const s = await runFuzz({ cases: CASES, seed: 20241126 });
  equal(s.cases, CASES);
  const worst = s.failures[0];
  equal(
    s.failures.length,
    0,
    worst &&
      `case ${worst.caseIndex} (${worst.target}/${worst.input}, ${worst.mutation}): ${worst.error}`,
  );
  const typed = Object.values(s.typed).reduce((a, b) => a + b, 0);
  equal(s.valid + typed, CASES);
  ok(s.valid > 0 && typed > 0, `valid ${s.valid}, typed ${typed}`);
  // Each parser is really exercised: its share of the cases, and it rejects some of them (a
  // target whose check accepted everything would test nothing).
  deepStrictEqual(Object.keys(s.byTarget).sort(), [...EXPECTED_TARGETS].sort());
  for (const [name, c] of Object.entries(s.byTarget)) {
    ok(c.cases >= MIN_CASES_PER_TARGET, `${name}: ${c.cases} cases`);
    ok(c.typed > 0, `${name}: no typed errors in ${c.cases} cases`);
    equal(c.valid + c.typed, c.cases, name);
  }
  // The mutations reach many distinct checks, not just the magic.
  ok(Object.keys(s.messages).length >= 15, Object.keys(s.messages).join("; "));
  ok(s.slowestCaseMs < 2000, `slowest case ${s.slowestCaseMs} ms`);
  ok(s.peakRssBytes < 1.5 * 2 ** 30, `peak RSS ${s.peakRssBytes}`);
});

Deno.test("runFuzz() is deterministic for a seed", async () => {
  const a = await runFuzz({ cases: 300, seed: 7, targets: [GGUF_FUZZ_TARGET] });
  const b = await runFuzz({ cases: 300, seed: 7, targets: [GGUF_FUZZ_TARGET] });
  deepStrictEqual([a.valid, a.typed, a.messages], [b.valid, b.typed, b.messages]);
});

Deno.test("registerFuzzTarget() rejects a duplicate name", () => {
  ok(FUZZ_TARGETS.includes(GGUF_FUZZ_TARGET));
  throws(() => registerFuzzTarget(GGUF_FUZZ_TARGET), /Duplicate fuzz target "gguf"/);
});
