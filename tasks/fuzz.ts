/**
 * Seeded mutation fuzzer for every parser in `tasks/fuzz_targets.ts`.
 *
 *     deno task fuzz [--cases 100000] [--seed 1] [--target gguf] [--replay N]
 *
 * Each case is derived from (seed, case index) alone, so any failure replays with
 * `--seed S --replay N`. Mutations: bit flips and byte sets in the header region, extreme values
 * written into length/count/type fields, truncations, chunk deletions and duplications. A case
 * passes when the parse succeeds or throws a PowerInferError subclass; anything else (TypeError,
 * RangeError, an allocation failure...) is a failure. Exit status 1 when any case failed.
 *
 * @module
 */

import { usageLine } from "../src/cli/report_error.ts";
import { parseCliArgs } from "../src/cli/options.ts";
import { seededRandom } from "../tests/_helpers.ts"; // the suite's mulberry32
import { PowerInferError } from "../src/errors.ts";
import { FUZZ_TARGETS, type FuzzInput, type FuzzTarget } from "./fuzz_targets.ts";

/** One case's mutated bytes plus how to undo in-place edits. */
interface Mutation {
  bytes: Uint8Array;
  description: string;
  undo: () => void;
}

const INTERESTING = [
  0n,
  1n,
  2n,
  3n,
  4n,
  5n,
  8n,
  12n,
  13n,
  0x7fn,
  0x80n,
  0xffn,
  0x100n,
  0xffffn,
  0x10000n,
  0x7fffffffn,
  0x80000000n,
  0xffffffffn,
  0x100000000n,
  (1n << 53n) - 1n,
  1n << 53n,
  1n << 63n,
  (1n << 64n) - 1n,
];

function mutate(input: FuzzInput, rand: () => number): Mutation {
  const src = input.bytes;
  const pick = (n: number) => Math.floor(rand() * n);
  const focus = Math.max(1, Math.min(input.focusBytes, src.length));
  const edits: [number, number][] = [];
  const set = (offset: number, value: number) => {
    if (offset < 0 || offset >= src.length) return;
    edits.push([offset, src[offset]!]);
    src[offset] = value;
  };
  const undo = () => {
    for (let i = edits.length - 1; i >= 0; i--) src[edits[i]![0]] = edits[i]![1];
  };
  const writeField = (): string => {
    const fields = input.fields ?? [];
    const f = fields.length > 0
      ? fields[pick(fields.length)]!
      : { offset: pick(focus), width: (rand() < 0.5 ? 4 : 8) as 4 | 8 };
    let v: bigint;
    const r = rand();
    if (r < 0.6) v = INTERESTING[pick(INTERESTING.length)]!;
    else if (r < 0.75) v = BigInt(src.length + pick(5) - 2);
    else if (r < 0.9) {
      let old = 0n;
      for (let i = f.width - 1; i >= 0; i--) old = (old << 8n) | BigInt(src[f.offset + i] ?? 0);
      v = old + BigInt(pick(9) - 4);
    } else v = BigInt(pick(0x100000000)) << BigInt(pick(33));
    v &= (1n << BigInt(f.width * 8)) - 1n;
    for (let i = 0; i < f.width; i++) set(f.offset + i, Number((v >> BigInt(8 * i)) & 0xffn));
    return `field@${f.offset}/${f.width}=${v}`;
  };
  const inPlace = (kind: number): string => {
    switch (kind) {
      case 0: {
        const n = 1 + pick(8);
        const at: number[] = [];
        for (let i = 0; i < n; i++) {
          const o = pick(focus);
          at.push(o);
          set(o, src[o]! ^ (1 << pick(8)));
        }
        return `flip@${at.join(",")}`;
      }
      case 1: {
        const o = pick(focus);
        const v = [0, 0xff, 0x7f, 0x80, 1, pick(256)][pick(6)]!;
        set(o, v);
        return `set@${o}=${v}`;
      }
      default:
        return writeField();
    }
  };

  const kind = pick(10);
  if (kind <= 4) {
    // 0..1 byte edits, 2..4 field edits (fields are where lying lengths live)
    const description = inPlace(kind <= 1 ? kind : 2);
    return { bytes: src, description, undo };
  }
  if (kind === 5) {
    const d = [inPlace(pick(3)), inPlace(pick(3)), inPlace(2)].join(" ");
    return { bytes: src, description: d, undo };
  }
  if (kind <= 7) {
    // truncation, mostly inside the header region
    const end = rand() < 0.8 ? pick(focus) : pick(src.length);
    const d = kind === 7 ? `${inPlace(2)} ` : "";
    return { bytes: src.subarray(0, end), description: `${d}truncate@${end}`, undo };
  }
  if (src.length <= 1 << 18) {
    // delete or duplicate a chunk of the header region (copies; small inputs only)
    const a = pick(focus);
    const len = 1 + pick(Math.min(64, focus));
    const out = kind === 8
      ? concat(src.subarray(0, a), src.subarray(Math.min(src.length, a + len)))
      : concat(src.subarray(0, a + len), src.subarray(a));
    return { bytes: out, description: `${kind === 8 ? "delete" : "dup"}@${a}+${len}`, undo };
  }
  return { bytes: src, description: inPlace(0), undo };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** A case that threw something other than a PowerInferError. */
export interface FuzzFailure {
  target: string;
  input: string;
  caseIndex: number;
  mutation: string;
  error: string;
}

/** Totals of a fuzz run. */
export interface FuzzSummary {
  cases: number;
  seed: number;
  valid: number;
  /** Typed errors by class name. */
  typed: Record<string, number>;
  /** Typed errors by the start of their message ("Truncated tensor data of", ...). */
  messages: Record<string, number>;
  failures: FuzzFailure[];
  /** Per target: cases run, valid parses, typed errors. */
  byTarget: Record<string, { cases: number; valid: number; typed: number }>;
  slowestCaseMs: number;
  elapsedMs: number;
  peakRssBytes: number;
}

/** Options of {@linkcode runFuzz}. */
export interface FuzzOptions {
  cases: number;
  seed: number;
  targets?: readonly FuzzTarget[];
  /** Run only this case index (replay). */
  only?: number;
  /** Called for every case (replay printing). */
  onCase?: (caseIndex: number, target: string, input: string, mutation: string) => void;
}

/**
 * Runs `cases` seeded mutation cases round-robin over the targets' corpora.
 *
 * @returns The totals; `failures` lists every case that threw an untyped error.
 */
export async function runFuzz(opts: FuzzOptions): Promise<FuzzSummary> {
  const targets = opts.targets ?? FUZZ_TARGETS;
  const corpora: { target: FuzzTarget; inputs: FuzzInput[] }[] = [];
  for (const target of targets) {
    const inputs = await target.corpus();
    for (const input of inputs) target.check(input.bytes); // the corpus itself must be valid
    corpora.push({ target, inputs });
  }
  const summary: FuzzSummary = {
    cases: 0,
    seed: opts.seed,
    valid: 0,
    typed: {},
    messages: {},
    failures: [],
    byTarget: Object.fromEntries(targets.map((t) => [t.name, { cases: 0, valid: 0, typed: 0 }])),
    slowestCaseMs: 0,
    elapsedMs: 0,
    peakRssBytes: Deno.memoryUsage().rss,
  };
  const t0 = performance.now();
  const first = opts.only ?? 0;
  const last = opts.only ?? opts.cases - 1;
  for (let i = first; i <= last; i++) {
    const rand = seededRandom(
      Math.imul(opts.seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(i, 0xc2b2ae35),
    );
    const { target, inputs } = corpora[i % corpora.length]!;
    const input = inputs[Math.floor(rand() * inputs.length)]!;
    const m = mutate(input, rand);
    opts.onCase?.(i, target.name, input.name, m.description);
    const c0 = performance.now();
    const counts = summary.byTarget[target.name]!;
    counts.cases++;
    try {
      target.check(m.bytes);
      summary.valid++;
      counts.valid++;
    } catch (error) {
      if (error instanceof PowerInferError) {
        counts.typed++;
        summary.typed[error.name] = (summary.typed[error.name] ?? 0) + 1;
        // "Truncated tensor data of "x": ..." -> "Truncated tensor data of"
        const kind = error.message.split(/[:"(]|\d/)[0]!.trim();
        summary.messages[kind] = (summary.messages[kind] ?? 0) + 1;
      } else {
        summary.failures.push({
          target: target.name,
          input: input.name,
          caseIndex: i,
          mutation: m.description,
          error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
        });
      }
    } finally {
      m.undo();
    }
    const dt = performance.now() - c0;
    if (dt > summary.slowestCaseMs) summary.slowestCaseMs = dt;
    summary.cases++;
    if ((i & 255) === 0) {
      summary.peakRssBytes = Math.max(summary.peakRssBytes, Deno.memoryUsage().rss);
    }
  }
  summary.elapsedMs = performance.now() - t0;
  summary.peakRssBytes = Math.max(summary.peakRssBytes, Deno.memoryUsage().rss);
  return summary;
}

/**
 * The `deno task fuzz` command line; returns the exit status (1 on a usage error or a failure).
 *
 * @param args Command-line arguments.
 * @returns 0 when every case gave a valid parse or a typed error.
 */
export async function main(args: string[]): Promise<number> {
  const usage =
    "Usage: deno task fuzz [--cases N] [--seed S] [--target NAME]... [--replay CASE]\n" +
    `Targets: ${FUZZ_TARGETS.map((t) => t.name).join(", ")}`;
  const parsed = parseCliArgs("fuzz", usage, {
    args,
    options: {
      cases: { type: "string", default: "100000" },
      seed: { type: "string", default: "1" },
      target: { type: "string", multiple: true },
      replay: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (typeof parsed === "number") return parsed;
  const { values } = parsed;
  const cases = Number(values.cases);
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(cases) || cases < 0 || !Number.isSafeInteger(seed)) {
    console.error(usageLine(
      `Bad --cases ${values.cases} or --seed ${values.seed}: expected integers, cases >= 0`,
      "fuzz",
    ));
    return 1;
  }
  let targets = FUZZ_TARGETS;
  if (values.target) {
    targets = FUZZ_TARGETS.filter((t) => values.target!.includes(t.name));
    if (targets.length === 0) {
      console.error(usageLine(
        `Unknown target ${values.target.join(", ")}: expected one of ${
          FUZZ_TARGETS.map((t) => t.name).join(", ")
        }`,
        "fuzz",
      ));
      return 1;
    }
  }
  const only = values.replay === undefined ? undefined : Number(values.replay);
  if (only !== undefined && (!Number.isSafeInteger(only) || only < 0 || only >= cases)) {
    console.error(
      usageLine(`Bad --replay ${values.replay}: expected a case in 0..${cases - 1}`, "fuzz"),
    );
    return 1;
  }
  const s = await runFuzz({
    cases,
    seed,
    targets,
    only,
    onCase: only === undefined
      ? undefined
      : (i, t, input, m) => console.log(`case ${i}: ${t} ${input} ${m}`),
  });
  const typedTotal = Object.values(s.typed).reduce((a, b) => a + b, 0);
  console.log(
    `fuzz seed ${s.seed}: ${s.cases} cases over ${targets.map((t) => t.name).join(", ")} in ${
      (s.elapsedMs / 1000).toFixed(1)
    } s`,
  );
  console.log(`  valid parses   ${s.valid}`);
  console.log(
    `  typed errors   ${typedTotal} (${
      Object.entries(s.typed).map(([k, v]) => `${k} ${v}`).join(", ")
    })`,
  );
  const kinds = Object.entries(s.messages).sort((x, y) => y[1] - x[1]);
  for (const [k, v] of kinds) console.log(`    ${String(v).padStart(7)}  ${k}`);
  for (const [name, c] of Object.entries(s.byTarget)) {
    console.log(`  ${name.padEnd(15)}${c.cases} cases: ${c.valid} valid, ${c.typed} typed errors`);
  }
  console.log(`  failures       ${s.failures.length}`);
  console.log(`  slowest case   ${s.slowestCaseMs.toFixed(1)} ms`);
  console.log(`  peak RSS       ${(s.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
  for (const f of s.failures.slice(0, 20)) {
    console.log(`  FAIL case ${f.caseIndex} ${f.target}/${f.input} ${f.mutation}: ${f.error}`);
  }
  return s.failures.length > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
