import { deepStrictEqual, equal, throws } from "node:assert/strict";
import { TokenizerError } from "../src/errors.ts";
import { BYTE_TO_UNICODE, pretokenize, UNICODE_TO_BYTE } from "../src/tokenizer/bpe.ts";
import { loadTokenizer } from "../src/tokenizer/tokenizer.ts";
import { CodepointClass, codepointClasses } from "../src/tokenizer/unicode.ts";
import { fixture } from "./_helpers.ts";
import { randomUnicode } from "./tokenizer_random.ts";

const tok = loadTokenizer(fixture("ggml-vocab-falcon.gguf"));
const cases: { text: string; ids: number[] }[] = JSON.parse(
  await Deno.readTextFile(fixture("falcon-cases.json")),
);

function words(text: string): string[] {
  const cps = [...text].map((c) => c.codePointAt(0)!);
  const out: string[] = [];
  pretokenize(cps, (a, b) => out.push(String.fromCodePoint(...cps.slice(a, b))));
  return out;
}

Deno.test("loadTokenizer() reads the Falcon vocabulary", () => {
  equal(tok.kind, "bpe");
  equal(tok.nVocab, 65024);
  equal(tok.bosId, 11);
  equal(tok.eosId, 11);
  equal(tok.addBos, false);
  equal(cases.length, 27);
});

for (const { text, ids } of cases) {
  Deno.test(`BPE encode() matches llama.cpp on ${JSON.stringify(text)}`, () => {
    deepStrictEqual(tok.encode(text), ids); // no BOS by default for BPE
    deepStrictEqual(tok.encode(text, { addBos: true }), [11, ...ids]);
  });
}

Deno.test("BPE decode(encode(text)) and the stream decoder return every case text", () => {
  for (const { text } of cases) {
    const ids = tok.encode(text);
    equal(tok.decode(ids), text);
    const d = tok.createStreamDecoder();
    let out = "";
    for (const id of ids) out += d.push(id);
    equal(out + d.flush(), text);
  }
});

/** Control characters whose byte has no token in the Falcon vocabulary. */
const FALCON_MISSING_CONTROLS = [
  3,
  4,
  5,
  0xb,
  0x11,
  0x13,
  0x14,
  0x15,
  0x16,
  0x17,
  0x19,
  0x1c,
  0x1d,
  0x1e,
];

Deno.test("BPE decode/encode round-trips seeded random Unicode strings", () => {
  for (let seed = 1; seed <= 300; seed++) {
    // Planes 8-11 (UTF-8 lead byte 0xF2) and a few controls cannot be written with this vocab.
    const text = randomUnicode(seed, {
      exclude: FALCON_MISSING_CONTROLS,
      excludeRange: [0x80000, 0xbffff],
    });
    const ids = tok.encode(text);
    equal(tok.decode(ids), text, `seed ${seed}`);
    const d = tok.createStreamDecoder();
    let streamed = "";
    for (const id of ids) streamed += d.push(id);
    equal(streamed + d.flush(), text, `stream, seed ${seed}`);
  }
});

Deno.test("BPE encode() throws TokenizerError for bytes the vocabulary lacks, like the reference", () => {
  throws(() => tok.encode("a\u0003b"), TokenizerError);
  throws(() => tok.encode(String.fromCodePoint(0x90000)), /0xF2/);
});

Deno.test("BPE encode() replaces lone surrogates by U+FFFD", () => {
  equal(tok.decode(tok.encode("x\udfff\ud83dy")), "x\ufffd\ufffdy");
});

Deno.test("pretokenize() follows the reference state machine", () => {
  deepStrictEqual(words("Hello world's 123abc  x"), [
    "Hello",
    " world",
    "'s",
    " 123",
    "abc",
    " ",
    " x",
  ]);
  deepStrictEqual(words("we'll they're I'd"), ["we", "'ll", " they", "'re", " I", "'d"]);
  // After a split the next character joins the word without a split (reference quirk): "b\n\n"
  deepStrictEqual(words("a!!  ?b\n\n c"), ["a", "!!", " ", " ?", "b\n\n", " c"]);
  deepStrictEqual(words(" "), [" "]);
  deepStrictEqual(words("x "), ["x "]); // the last character always joins the word
});

Deno.test("codepointClasses() uses Unicode 13.0 letters, not the engine's newer tables", () => {
  const cls = codepointClasses();
  equal(cls[0x41], CodepointClass.LETTER); // A
  equal(cls[0x4e2d], CodepointClass.LETTER); // 中
  equal(cls[0x0301], CodepointClass.OTHER); // combining acute (Mn)
  equal(cls[0x0870], CodepointClass.OTHER); // Arabic letter added in Unicode 14.0
  ok14(/\p{L}/u.test("\u0870"));
  equal(cls[0x0663], CodepointClass.DIGIT); // Arabic-Indic three (Nd)
  equal(cls[0x00b2], CodepointClass.DIGIT); // superscript two (isdigit)
  equal(cls[0x00bd], CodepointClass.OTHER); // one half (No, not a digit)
  equal(cls[0x3000], CodepointClass.WHITESPACE);
  equal(cls[0x200b], CodepointClass.OTHER); // zero width space is not whitespace
});

function ok14(v: boolean) {
  equal(v, true, "the JS engine knows Unicode >= 14 (otherwise this check is moot)");
}

Deno.test("BYTE_TO_UNICODE is the GPT-2 map and UNICODE_TO_BYTE its inverse", () => {
  equal(BYTE_TO_UNICODE[0x20], 0x120); // Ġ
  equal(BYTE_TO_UNICODE[0x0a], 0x10a); // Ċ
  equal(BYTE_TO_UNICODE[0x41], 0x41);
  equal(BYTE_TO_UNICODE[0xad], 0x143);
  for (let b = 0; b < 256; b++) equal(UNICODE_TO_BYTE[BYTE_TO_UNICODE[b]!], b);
});

Deno.test("BPE parseSpecial recognises the 12 Falcon special tokens", () => {
  deepStrictEqual(tok.specialTokens.map(([, id]) => id).sort((a, b) => a - b), [
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
  ]);
  deepStrictEqual(tok.encode("Hello<|endoftext|>", { parseSpecial: true }), [9856, 11]);
  deepStrictEqual(tok.encode(">>TITLE<<Hi", { parseSpecial: true }).slice(0, 1), [0]);
  equal(tok.encode("<|endoftext|>").length > 1, true);
  // Falcon's special tokens are NORMAL typed, so they decode as their text
  equal(tok.decode([11]), "<|endoftext|>");
});

Deno.test("BPE nlId reproduces the reference: the id of the text Ċ, not the newline token", () => {
  equal(tok.nlId, 138);
  deepStrictEqual(tok.encode("\n"), [193]);
});

Deno.test("BPE encode() of a long text round-trips (100k characters)", () => {
  const text = "Falcon flies over 42 fields, doesn't it?\n".repeat(2500);
  equal(tok.decode(tok.encode(text)), text);
});

Deno.test("BPE encode() stays exact after one huge word (buffers released)", () => {
  const ids = tok.encode("a".repeat(70_000));
  equal(tok.decode(ids), "a".repeat(70_000));
  for (const { text, ids } of cases) deepStrictEqual(tok.encode(text), ids);
});
