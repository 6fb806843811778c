// Encoding speed of the SPM (LLaMA) and BPE (Falcon) tokenizers on 1 MB of text:
// - "encode": mixed prose / code / Cyrillic / CJK / emoji (words repeat, caches help),
// - "random": seeded random words (almost nothing repeats),
// - "run": one 1M-character word, the worst case for the merge queue (O(n log n)).
// Run: deno bench -A bench/tokenizer_bench.ts
import { loadTokenizer } from "../src/tokenizer/tokenizer.ts";

const fixture = (name: string) => new URL(`../tests/fixtures/${name}`, import.meta.url).pathname;
const llama = loadTokenizer(fixture("ggml-vocab-llama.gguf"));
const falcon = loadTokenizer(fixture("ggml-vocab-falcon.gguf"));

/** About 1 MB (UTF-8) of prose, code, numbers and non-Latin text, deterministic. */
function megabyteText(): string {
  const parts = [
    "The quick brown fox jumps over the lazy dog while 42 owls watch from 1,337 trees. ",
    "PowerInfer keeps hot neurons on the GPU and cold ones on the CPU; isn't that neat? ",
    "function add(a, b) {\n    return a + b; // 2 + 2 == 4\n}\n",
    "Съешь же ещё этих мягких французских булок, да выпей чаю. ",
    "我能吞下玻璃而不伤身体。日本語のテキストも少し。 ",
    "Emoji: 🦙🚀✅ 😶‍🌫️ and accents: café, naïve, Zürich.\n\n",
  ];
  let s = "";
  let i = 0;
  const size = () => new TextEncoder().encode(s).length;
  while (s.length < 900_000 || size() < 1_000_000) s += parts[i++ % parts.length];
  return s;
}

/** About 1 MB of random "words" (seeded): almost every chunk is new, so caches do not help. */
function randomText(): string {
  let a = 12345;
  const rand = () => {
    a = (Math.imul(a, 1103515245) + 12345) >>> 0;
    return a / 4294967296;
  };
  const letters = "abcdefghijklmnopqrstuvwxyzéßёжя中文0123456789.,;:!?()";
  const chars = [...letters];
  let s = "";
  while (s.length < 1_000_000) {
    const n = 1 + Math.floor(rand() * 12);
    for (let i = 0; i < n; i++) s += chars[Math.floor(rand() * chars.length)];
    s += rand() < 0.1 ? "\n" : " ";
  }
  return s;
}

const text = megabyteText();
const random = randomText();
// Worst case for merging: no place to cut, one 1M-symbol queue.
const run = "a".repeat(1_000_000);
const MB = new TextEncoder().encode(text).length / 1e6;

Deno.bench(`SPM (LLaMA) encode ${MB.toFixed(2)} MB`, { group: "encode", n: 5 }, () => {
  llama.encode(text);
});

Deno.bench(`BPE (Falcon) encode ${MB.toFixed(2)} MB`, { group: "encode", n: 5 }, () => {
  falcon.encode(text);
});

Deno.bench("SPM (LLaMA) encode 1 MB of random words", { group: "random", n: 3 }, () => {
  llama.encode(random);
});

Deno.bench("BPE (Falcon) encode 1 MB of random words", { group: "random", n: 3 }, () => {
  falcon.encode(random);
});

Deno.bench("SPM (LLaMA) encode a run of 1M 'a'", { group: "run", n: 3 }, () => {
  llama.encode(run);
});

Deno.bench("BPE (Falcon) encode a run of 1M 'a'", { group: "run", n: 3 }, () => {
  falcon.encode(run);
});

const llamaIds = llama.encode(text);
Deno.bench(`SPM (LLaMA) decode ${llamaIds.length} ids`, { group: "decode", n: 5 }, () => {
  llama.decode(llamaIds);
});
