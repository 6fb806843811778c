// PowerInfer main's recorded prompt ids and outputs on the shared model fixtures: the tokenizer
// must give main's ids for main-style encoding (BOS as the model asks, special = true) and the
// recorded bytes when decoding. Skips honestly when ../shared/fixtures is absent.
import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { loadTokenizer } from "../src/tokenizer/tokenizer.ts";
import { hasSharedFixture, sharedFixture } from "./_helpers.ts";

interface Run {
  prompt: string;
  prompt_ids: number[];
  hf_sentencepiece_ids_with_bos?: number[];
  sentencepiece_ids_with_bos?: number[];
  hf_tokenizer_ids?: number[];
  generated_ids: number[];
  generated_text: string;
  generated_text_utf8_hex?: string;
  main_stdout: string;
}

const SOURCES: { dir: string; json: string; runs: (j: never) => [string, Run[]][] }[] = [
  {
    dir: "models/tiny",
    json: "reference_outputs.json",
    runs: (j: { models: Record<string, Run[]> }) => Object.entries(j.models),
  },
  {
    dir: "models/falcon-tiny",
    json: "reference_outputs.json",
    runs: (j: { models: Record<string, Run[]> }) => Object.entries(j.models),
  },
  {
    dir: "fortune-relu",
    json: "reference.json",
    runs: (j: { runs: { model: string; results: Run[] }[] }) =>
      j.runs.map((r) => [r.model, r.results]),
  },
];

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

for (const { dir, json, runs } of SOURCES) {
  const present = hasSharedFixture(`${dir}/${json}`);
  const all: [string, Run[]][] = present
    ? runs(JSON.parse(Deno.readTextFileSync(sharedFixture(`${dir}/${json}`))) as never)
    : [];
  // One model file per source is enough: they share the vocabulary.
  const entry = all.find(([model]) => hasSharedFixture(`${dir}/${model}`));
  Deno.test({
    name: `Tokenizer reproduces main's prompt ids and output bytes for ${dir}`,
    ignore: !entry,
    fn() {
      const [model, results] = entry!;
      const tok = loadTokenizer(sharedFixture(`${dir}/${model}`));
      ok(results.length > 0, `${dir}/${json} lists no runs for ${model}`); // no vacuous pass
      for (const r of results) {
        const what = `${model} ${JSON.stringify(r.prompt)}`;
        deepStrictEqual(tok.encode(r.prompt, { parseSpecial: true }), r.prompt_ids, what);
        const plain = r.hf_sentencepiece_ids_with_bos ?? r.sentencepiece_ids_with_bos;
        if (plain) deepStrictEqual(tok.encode(r.prompt), plain, `${what} (dummy prefix)`);
        if (r.hf_tokenizer_ids) deepStrictEqual(tok.encode(r.prompt), r.hf_tokenizer_ids, what);
        const raw = { stripLeadingSpace: false };
        const pieces = new Uint8Array(r.generated_ids.flatMap((id) => [...tok.tokenBytes(id)]));
        if (r.generated_text_utf8_hex) equal(hex(pieces), r.generated_text_utf8_hex, what);
        const ids = [...r.prompt_ids, ...r.generated_ids];
        equal(tok.decode(ids, raw), r.main_stdout, what);
        const stream = tok.createStreamDecoder(raw);
        equal(ids.map((id) => stream.push(id)).join("") + stream.flush(), r.main_stdout, what);
        const text = tok.kind === "spm" && dir === "fortune-relu"
          ? tok.decode(r.generated_ids) // SentencePiece decode drops the first space
          : tok.decode(r.generated_ids, raw);
        equal(text, r.generated_text, what);
      }
    },
  });
}
