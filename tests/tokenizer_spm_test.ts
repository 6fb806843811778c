import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { loadTokenizer } from "../src/tokenizer/tokenizer.ts";
import { fixture } from "./_helpers.ts";
import { randomUnicode } from "./tokenizer_random.ts";

const tok = loadTokenizer(fixture("ggml-vocab-llama.gguf"));
const cases: { text: string; ids: number[] }[] = JSON.parse(
  await Deno.readTextFile(fixture("llama-cases.json")),
);

Deno.test("loadTokenizer() reads the LLaMA vocabulary", () => {
  equal(tok.kind, "spm");
  equal(tok.nVocab, 32000);
  equal(tok.bosId, 1);
  equal(tok.eosId, 2);
  equal(tok.addBos, true);
  equal(tok.nlId, 13);
  equal(cases.length, 26);
});

for (const { text, ids } of cases) {
  Deno.test(`SPM encode() matches llama.cpp on ${JSON.stringify(text)}`, () => {
    deepStrictEqual(tok.encode(text, { addBos: false }), ids);
    deepStrictEqual(tok.encode(text, { addBos: true }), [1, ...ids]);
    deepStrictEqual(tok.encode(text), [1, ...ids]); // SPM adds BOS by default
  });
}

Deno.test("SPM decode(encode(text)) returns every case text, with and without BOS", () => {
  for (const { text } of cases) {
    equal(tok.decode(tok.encode(text, { addBos: false })), text);
    equal(tok.decode(tok.encode(text)), text);
  }
});

Deno.test("SPM stream decoder fed one id at a time equals decode()", () => {
  for (const { text } of cases) {
    for (const ids of [tok.encode(text), tok.encode(text, { addBos: false })]) {
      const d = tok.createStreamDecoder();
      let out = "";
      for (const id of ids) out += d.push(id);
      out += d.flush();
      equal(out, tok.decode(ids));
    }
  }
});

Deno.test("SPM stream decoder never returns part of a character", () => {
  const ids = tok.encode("🦙 é 中", { addBos: false }); // byte tokens for the llama
  const d = tok.createStreamDecoder();
  const pieces = ids.map((id) => d.push(id));
  for (const p of pieces) ok(!p.includes("\ufffd"), JSON.stringify(pieces));
  deepStrictEqual(pieces.slice(0, 5), ["", "", "", "", "🦙"]); // "▁" then four byte tokens
  equal(d.flush(), "");
});

Deno.test("SPM decode/encode round-trips seeded random Unicode strings", () => {
  for (let seed = 1; seed <= 300; seed++) {
    // U+2581 is the SPM space marker itself and decodes as a space, so it is left out.
    const text = randomUnicode(seed, { exclude: [0x2581] });
    const ids = tok.encode(text);
    equal(tok.decode(ids), text, `seed ${seed}`);
    const d = tok.createStreamDecoder();
    let streamed = "";
    for (const id of ids) streamed += d.push(id);
    equal(streamed + d.flush(), text, `stream, seed ${seed}`);
  }
});

Deno.test("SPM encode() replaces lone surrogates by U+FFFD", () => {
  const text = "a\ud800b\udc00";
  equal(tok.decode(tok.encode(text)), "a\ufffdb\ufffd");
  deepStrictEqual(tok.encode(text), tok.encode("a\ufffdb\ufffd"));
});

Deno.test("SPM encode() with parseSpecial reproduces main: no dummy prefix, specials parsed", () => {
  deepStrictEqual(tok.encode("Once upon a time", { parseSpecial: true }), [
    1,
    26222,
    2501,
    263,
    931,
  ]);
  deepStrictEqual(tok.encode("Once upon a time"), [1, 9038, 2501, 263, 931]);
  const ids = tok.encode("<s>Hi<0x0A></s>", { parseSpecial: true, addBos: false });
  deepStrictEqual(ids, [1, ...tok.encode("Hi", { parseSpecial: true, addBos: false }), 13, 2]);
  // without parseSpecial the markers are plain text
  ok(tok.encode("<s>", { addBos: false }).length > 1);
  // dummyPrefix decides the space independently
  deepStrictEqual(
    tok.encode("Once", { parseSpecial: true, dummyPrefix: true, addBos: false }),
    [9038],
  );
});

Deno.test("SPM special-token cache holds <unk>, <s>, </s> and the 256 byte tokens", () => {
  const specials = tok.specialTokens.map(([, id]) => id).sort((a, b) => a - b);
  deepStrictEqual(specials, Array.from({ length: 259 }, (_, i) => i));
});

Deno.test("SPM decode() pieces: control empty, unknown ▅, bytes raw, one space dropped", () => {
  equal(tok.decode([1, 2]), "");
  equal(tok.decode([0]), "\u2585");
  deepStrictEqual([...tok.tokenBytes(13)], [10]);
  deepStrictEqual([...tok.tokenBytes(15043)], [...new TextEncoder().encode(" Hello")]);
  equal(tok.decode([15043, 3186]), "Hello world");
  equal(tok.decode([1, 15043, 3186]), "Hello world");
  equal(tok.decode([15043, 3186], { stripLeadingSpace: false }), " Hello world");
  equal(tok.decode([1, 1, 15043]), " Hello"); // the drop applies to index 1 only
  equal(tok.decode([-1, 32000, 1.5]), "");
  equal(tok.tokenBytes(99999).length, 0);
});

Deno.test("SPM stream decoder with stripLeadingSpace false prints raw pieces like main", () => {
  const d = tok.createStreamDecoder({ stripLeadingSpace: false });
  equal(d.push(15043) + d.push(3186) + d.flush(), " Hello world");
});

Deno.test("SPM encode() of a long text is linear enough (100k characters)", () => {
  const text = "The quick brown fox jumps over the lazy dog. ".repeat(2300);
  const ids = tok.encode(text, { addBos: false });
  equal(tok.decode(ids), text);
  const word = tok.encode("The quick brown fox jumps over the lazy dog.", { addBos: false });
  ok(ids.length >= word.length * 2300 && ids.length <= (word.length + 1) * 2300);
});

Deno.test("SPM encode() stays exact after one huge unbroken chunk (buffers released)", () => {
  const ids = tok.encode("a".repeat(70_000), { addBos: false });
  equal(tok.decode(ids), "a".repeat(70_000));
  for (const { text, ids } of cases) deepStrictEqual(tok.encode(text, { addBos: false }), ids);
});
