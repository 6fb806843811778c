/**
 * GGUF vocabulary metadata from a Hugging Face directory, written the way PowerInfer's
 * converters (and their gguf-py) write it: SentencePiece vocab for LLaMA (`tokenizer.model`,
 * plus `added_tokens.json`), GPT-2-style BPE vocab for Falcon (`tokenizer.json`), and the
 * "special vocab" keys (merges, then bos/eos/unk/sep/pad ids in the order they were found).
 *
 * @module
 */

import { dirname, join, resolve } from "node:path";
import { ConvertError, TokenizerError } from "../errors.ts";
import { type GgufKv, GgufValueType } from "../gguf/types.ts";
import { parseHfTokenizerJson } from "./hf_tokenizer.ts";
import { parseSentencePieceModel } from "./sentencepiece.ts";
import { TokenType } from "../tokenizer/vocab.ts";

function readJson(path: string): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
  try {
    const v = JSON.parse(text);
    return v && typeof v === "object" ? v : undefined;
  } catch (cause) {
    throw new TokenizerError(`${path} is not valid JSON`, { cause });
  }
}

function readFileOrUndefined(path: string): Uint8Array | undefined {
  try {
    return Deno.readFileSync(path);
  } catch {
    return undefined;
  }
}

/**
 * Vocabulary KVs of a LLaMA-family model (tokenizer.ggml.model "llama"), as convert.py writes
 * them: `tokenizer.model` from the model directory (or its parent), plus `added_tokens.json`
 * entries whose ids follow the base vocab (score -1000, USER_DEFINED), dropped when config.json's
 * vocab_size equals the base size.
 */
export function llamaVocabKvs(dir: string, nVocab: number): GgufKv[] {
  let tokDir = dir;
  let bytes = readFileOrUndefined(join(dir, "tokenizer.model"));
  if (!bytes) {
    tokDir = dirname(resolve(dir));
    bytes = readFileOrUndefined(join(tokDir, "tokenizer.model"));
  }
  if (!bytes) {
    throw new ConvertError(
      `No tokenizer.model in ${dir} or its parent: LLaMA-family conversion needs the SentencePiece model`,
    );
  }
  const spm = parseSentencePieceModel(bytes);
  const tokens: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  for (const p of spm.pieces) {
    tokens.push(p.piece);
    scores.push(p.score);
    // sentencepiece's is_unknown/is_control/is_unused/is_byte; user-defined pieces stay NORMAL.
    types.push(p.type === TokenType.USER_DEFINED ? TokenType.NORMAL : p.type);
  }
  const nBase = tokens.length;
  const added = readJson(join(tokDir, "added_tokens.json"));
  if (added && nVocab !== nBase) {
    const fresh = Object.entries(added)
      .filter(([, id]) => typeof id === "number" && id >= nBase)
      .sort((a, b) => Number(a[1]) - Number(b[1]));
    fresh.forEach(([piece, id], i) => {
      if (id !== nBase + i) {
        throw new TokenizerError(
          `added_tokens.json ids must follow the ${nBase}-piece vocab without gaps: "${piece}" has ${id}, expected ${
            nBase + i
          }`,
        );
      }
      tokens.push(piece);
      scores.push(-1000);
      types.push(TokenType.USER_DEFINED);
    });
  }
  if (tokens.length !== nVocab) {
    throw new ConvertError(
      `Vocab size mismatch: config.json says ${nVocab}, the tokenizer has ${tokens.length}`,
    );
  }
  return [
    { key: "tokenizer.ggml.model", type: GgufValueType.STRING, value: "llama" },
    arr("tokenizer.ggml.tokens", GgufValueType.STRING, tokens),
    arr("tokenizer.ggml.scores", GgufValueType.FLOAT32, scores),
    arr("tokenizer.ggml.token_type", GgufValueType.INT32, types),
    ...specialVocabKvs(dir, { loadMerges: false, nVocab: tokens.length }),
  ];
}

/** Vocabulary KVs of a GPT-2-style BPE model from tokenizer.json (Falcon). */
export function gpt2VocabKvs(dir: string, configVocabSize: number | undefined): GgufKv[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(join(dir, "tokenizer.json"));
  } catch (cause) {
    throw new ConvertError(`No tokenizer.json in ${dir}: Falcon conversion needs it`, { cause });
  }
  const tok = parseHfTokenizerJson(text);
  // transformers' tokenizer.vocab includes the added tokens.
  const vocab = new Map(tok.vocab);
  for (const a of tok.addedTokens) vocab.set(a.content, a.id);
  const addedById = new Map(tok.addedTokens.map((a) => [a.id, a]));
  let maxId = -1;
  for (const id of vocab.values()) maxId = Math.max(maxId, id);
  const nVocab = configVocabSize ?? vocab.size;
  if (maxId >= nVocab) {
    throw new ConvertError(
      `tokenizer.json has token id ${maxId}: config.json vocab_size is ${nVocab}`,
    );
  }
  const reverse = new Map<number, string>();
  for (const [t, id] of vocab) reverse.set(id, t);
  const tokens: string[] = [];
  const types: number[] = [];
  for (let i = 0; i < nVocab; i++) {
    const t = reverse.get(i);
    if (t === undefined) {
      tokens.push(`[PAD${i}]`);
      types.push(TokenType.USER_DEFINED);
    } else if (addedById.get(i)?.content === t) {
      tokens.push(t);
      types.push(addedById.get(i)!.special ? TokenType.CONTROL : TokenType.USER_DEFINED);
    } else {
      tokens.push(t);
      types.push(TokenType.NORMAL);
    }
  }
  return [
    { key: "tokenizer.ggml.model", type: GgufValueType.STRING, value: "gpt2" },
    arr("tokenizer.ggml.tokens", GgufValueType.STRING, tokens),
    arr("tokenizer.ggml.token_type", GgufValueType.INT32, types),
    ...specialVocabKvs(dir, { loadMerges: true }),
  ];
}

function arr(
  key: string,
  elementType: Exclude<GgufValueType, GgufValueType.ARRAY>,
  value: (string | number)[],
): GgufKv {
  return { key, type: GgufValueType.ARRAY, elementType, value };
}

const SPECIAL_TYPES = ["bos", "eos", "unk", "sep", "pad"] as const;
const SPECIAL_KEYS: Record<(typeof SPECIAL_TYPES)[number], string> = {
  bos: "tokenizer.ggml.bos_token_id",
  eos: "tokenizer.ggml.eos_token_id",
  unk: "tokenizer.ggml.unknown_token_id",
  sep: "tokenizer.ggml.seperator_token_id",
  pad: "tokenizer.ggml.padding_token_id",
};

/**
 * The special-vocab KVs gguf-py's SpecialVocab (as PowerInfer ships it) writes: merges from
 * tokenizer.json (string form only) or merges.txt; special ids first from tokenizer_config.json
 * token strings looked up in tokenizer.json's added tokens, then from config.json `<typ>_token_id`;
 * the first value found per type wins. No add_bos/add_eos keys (that gguf-py predates them).
 *
 * @param dir Model directory.
 * @param opts `loadMerges` (BPE vocabs) and `nVocab` (ids at or past it are ignored).
 * @returns KVs: merges (if any), then ids in the order they were set.
 */
export function specialVocabKvs(
  dir: string,
  opts: { loadMerges: boolean; nVocab?: number },
): GgufKv[] {
  let merges: string[] | undefined;
  const ids = new Map<string, number>();
  const set = (typ: string, id: unknown) => {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) return;
    if (opts.nVocab !== undefined && id >= opts.nVocab) return;
    if (!ids.has(typ)) ids.set(typ, id);
  };
  let tokText: string | undefined;
  try {
    tokText = Deno.readTextFileSync(join(dir, "tokenizer.json"));
  } catch { /* no tokenizer.json */ }
  if (tokText !== undefined) {
    const tok = parseHfTokenizerJson(tokText);
    if (opts.loadMerges && tok.merges && tok.merges.length > 0) merges = tok.merges;
    const tc = readJson(join(dir, "tokenizer_config.json"));
    if (tc) {
      for (const typ of SPECIAL_TYPES) {
        const entry = tc[`${typ}_token`];
        let content: string | undefined;
        if (typeof entry === "string") content = entry;
        else if (entry && typeof entry === "object") {
          const c = (entry as Record<string, unknown>).content;
          if (typeof c === "string") content = c;
        }
        if (content === undefined) continue;
        set(typ, tok.addedTokens.find((a) => a.content === content)?.id);
      }
    }
  }
  const config = readJson(join(dir, "config.json"));
  if (config) { for (const typ of SPECIAL_TYPES) set(typ, config[`${typ}_token_id`]); }
  if (opts.loadMerges && !merges) {
    let mt: string | undefined;
    try {
      mt = Deno.readTextFileSync(join(dir, "merges.txt"));
    } catch { /* none */ }
    if (mt !== undefined) {
      const lines = mt.split("\n");
      if (lines[0]?.trim().startsWith("#")) lines.shift();
      merges = [];
      for (const raw of lines) {
        const parts = raw.trim().split(/\s+/).filter((s) => s.length > 0);
        if (parts.length === 2) merges.push(`${parts[0]} ${parts[1]}`);
      }
    }
  }
  const out: GgufKv[] = [];
  if (merges && merges.length > 0) {
    out.push(arr("tokenizer.ggml.merges", GgufValueType.STRING, merges));
  }
  for (const [typ, id] of ids) {
    out.push({
      key: SPECIAL_KEYS[typ as keyof typeof SPECIAL_KEYS],
      type: GgufValueType.UINT32,
      value: id,
    });
  }
  return out;
}
