import { deepStrictEqual, equal, match, throws } from "node:assert/strict";
import { TokenizerError } from "../src/errors.ts";
import { parseGguf } from "../src/gguf/reader.ts";
import { type GgufKv, GgufValueType } from "../src/gguf/types.ts";
import { serializeGguf } from "../src/gguf/writer.ts";
import { tokenizerFromGguf } from "../src/tokenizer/tokenizer.ts";
import { loadVocab, TokenType } from "../src/tokenizer/vocab.ts";

type Element = Exclude<GgufValueType, GgufValueType.ARRAY>;
const str = (key: string, value: string): GgufKv => ({ key, type: GgufValueType.STRING, value });
const u32 = (key: string, value: number): GgufKv => ({ key, type: GgufValueType.UINT32, value });
const arr = (key: string, elementType: Element, value: (string | number)[]): GgufKv => ({
  key,
  type: GgufValueType.ARRAY,
  elementType,
  value,
});

const SPM_TOKENS = ["<unk>", "<s>", "</s>", "<0x41>", "\u2581", "a", "b", "ab", "\u2581ab"];
const SPM_SCORES = [0, 0, 0, 0, -5, -4, -4, -2, -1];
const SPM_TYPES = [2, 3, 3, 6, 1, 1, 1, 1, 1];

function spmKvs(): GgufKv[] {
  return [
    str("tokenizer.ggml.model", "llama"),
    arr("tokenizer.ggml.tokens", GgufValueType.STRING, SPM_TOKENS),
    arr("tokenizer.ggml.scores", GgufValueType.FLOAT32, SPM_SCORES),
    arr("tokenizer.ggml.token_type", GgufValueType.INT32, SPM_TYPES),
  ];
}

async function file(metadata: GgufKv[]) {
  return parseGguf(await serializeGguf({ metadata, tensors: [] }));
}

function replace(kvs: GgufKv[], kv: GgufKv): GgufKv[] {
  return kvs.map((k) => (k.key === kv.key ? kv : k));
}

Deno.test("loadVocab() reads tokens, scores, types and default ids", async () => {
  const v = loadVocab(await file(spmKvs()));
  equal(v.kind, "spm");
  deepStrictEqual(v.tokens, SPM_TOKENS);
  deepStrictEqual([...v.scores], SPM_SCORES);
  deepStrictEqual([...v.types], SPM_TYPES);
  deepStrictEqual([v.bosId, v.eosId, v.unkId, v.sepId, v.padId], [1, 2, 0, -1, -1]);
  equal(v.addBosFlag, undefined);
  equal(v.types[3], TokenType.BYTE);
});

Deno.test("loadVocab() takes id overrides and flags, ignoring ids outside the vocabulary", async () => {
  const v = loadVocab(
    await file([
      ...spmKvs(),
      u32("tokenizer.ggml.bos_token_id", 2),
      u32("tokenizer.ggml.eos_token_id", 99),
      u32("tokenizer.ggml.padding_token_id", 0),
      { key: "tokenizer.ggml.add_bos_token", type: GgufValueType.BOOL, value: false },
    ]),
  );
  deepStrictEqual([v.bosId, v.eosId, v.padId, v.addBosFlag], [2, 2, 0, false]);
});

Deno.test("tokenizerFromGguf() merges by score and falls back to byte tokens", async () => {
  const tok = tokenizerFromGguf(await file(spmKvs()));
  deepStrictEqual(tok.encode("ab", { addBos: false }), [8]);
  deepStrictEqual(tok.encode("ba", { addBos: false }), [4, 6, 5]);
  deepStrictEqual(tok.encode("A", { addBos: false }), [4, 3]); // "A" only as <0x41>
  throws(() => tok.encode("C"), TokenizerError); // no <0x43>
  equal(tok.decode(tok.encode("ab ba A")), "ab ba A");
});

Deno.test("loadVocab() warns about an unknown tokenizer model and uses SPM", async () => {
  const warnings: string[] = [];
  const v = loadVocab(await file(replace(spmKvs(), str("tokenizer.ggml.model", "t5"))), {
    onWarning: (m) => warnings.push(m),
  });
  equal(v.kind, "spm");
  equal(warnings.length, 1);
  match(warnings[0]!, /Unknown tokenizer model "t5"/);
});

Deno.test("loadVocab() rejects a file without a vocabulary", async () => {
  const noModel = await file(spmKvs().slice(1));
  throws(() => loadVocab(noModel), /key "tokenizer\.ggml\.model" is missing/);
  const noTokens = await file([str("tokenizer.ggml.model", "llama")]);
  throws(() => loadVocab(noTokens), /key "tokenizer\.ggml\.tokens" is missing/);
});

Deno.test("loadVocab() rejects inconsistent vocabularies with TokenizerError", async () => {
  const cases: [GgufKv, RegExp][] = [
    [arr("tokenizer.ggml.tokens", GgufValueType.STRING, []), /is empty/],
    [arr("tokenizer.ggml.tokens", GgufValueType.STRING, ["a", "b", "a"]), /same text "a"/],
    [arr("tokenizer.ggml.tokens", GgufValueType.STRING, ["a", ""]), /Token 1 is empty/],
    [arr("tokenizer.ggml.tokens", GgufValueType.INT32, [1, 2]), /must be an array of strings/],
    [arr("tokenizer.ggml.scores", GgufValueType.FLOAT32, [0, 1]), /has 2 entries: expected 9/],
    [arr("tokenizer.ggml.token_type", GgufValueType.INT32, [1, 1]), /has 2 entries/],
    [
      arr("tokenizer.ggml.token_type", GgufValueType.INT32, SPM_TYPES.map(() => 7)),
      /Token 0 has type 7: expected 1 to 6/,
    ],
    [str("tokenizer.ggml.scores", "x"), /must be an array of FLOAT32/],
  ];
  for (const [kv, message] of cases) {
    const f = await file(replace(spmKvs(), kv));
    throws(() => loadVocab(f), (e: unknown) => {
      equal(e instanceof TokenizerError, true, String(e));
      match((e as Error).message, message);
      return true;
    });
  }
  const badId = await file([...spmKvs(), str("tokenizer.ggml.bos_token_id", "1")]);
  throws(() => loadVocab(badId), /must be an integer token id/);
});

Deno.test("loadVocab() requires merges for a BPE vocabulary and checks their form", async () => {
  const bpe = [
    str("tokenizer.ggml.model", "gpt2"),
    arr("tokenizer.ggml.tokens", GgufValueType.STRING, ["a", "b", "ab", "\u0120", "\u0120ab"]),
  ];
  const noMerges = await file(bpe);
  throws(() => loadVocab(noMerges), /needs merges/);
  const badMerge = await file([...bpe, arr("tokenizer.ggml.merges", GgufValueType.STRING, ["ab"])]);
  throws(() => loadVocab(badMerge), /Merge 0 "ab"/);
  const tok = tokenizerFromGguf(
    await file([
      ...bpe,
      arr("tokenizer.ggml.merges", GgufValueType.STRING, ["a b", "\u0120 ab"]),
    ]),
  );
  deepStrictEqual([tok.bosId, tok.eosId, tok.addBos], [11, 11, false]);
  deepStrictEqual(tok.encode("ab ab ba"), [2, 4, 3, 1, 0]);
  equal(tok.decode([2, 4]), "ab ab");
});
