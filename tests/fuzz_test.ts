// Seeded fuzz of every registered parser (tasks/fuzz_targets.ts): each mutated input parses or
// throws a PowerInferError subclass; never another exception, a hang or a huge allocation.
import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import { runFuzz } from "../tasks/fuzz.ts";
import { FUZZ_TARGETS, GGUF_FUZZ_TARGET, registerFuzzTarget } from "../tasks/fuzz_targets.ts";

const CASES = 3000;

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
