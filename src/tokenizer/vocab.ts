/**
 * Vocabulary loading from GGUF metadata (spec/tokenizer.md §1): token texts, scores, token
 * types, BPE merges, the special ids and the special-token cache used by `parseSpecial`.
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";
import type { GgufFile } from "../gguf/reader.ts";
import { type GgufKv, type GgufScalar, GgufValueType } from "../gguf/types.ts";

/** `tokenizer.ggml.token_type` values. */
export enum TokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

/** GGUF keys of the tokenizer, verbatim. */
export const TOKENIZER_KEYS = {
  model: "tokenizer.ggml.model",
  tokens: "tokenizer.ggml.tokens",
  scores: "tokenizer.ggml.scores",
  tokenType: "tokenizer.ggml.token_type",
  merges: "tokenizer.ggml.merges",
  bosId: "tokenizer.ggml.bos_token_id",
  eosId: "tokenizer.ggml.eos_token_id",
  unkId: "tokenizer.ggml.unknown_token_id",
  sepId: "tokenizer.ggml.seperator_token_id",
  padId: "tokenizer.ggml.padding_token_id",
  addBos: "tokenizer.ggml.add_bos_token",
  addEos: "tokenizer.ggml.add_eos_token",
} as const;

/** The space marker of SentencePiece vocabularies, U+2581. */
export const SPM_SPACE = "\u2581";

/** Separator of the two sides in {@link Vocab.mergeRanks} keys (never inside a byte-level token). */
export const MERGE_KEY_SEPARATOR = "\u0000";

/** Everything the tokenizers need from a model's vocabulary. */
export interface Vocab {
  /** "spm" for `tokenizer.ggml.model` = "llama" (and unknown models), "bpe" for "gpt2". */
  readonly kind: "spm" | "bpe";
  /** The `tokenizer.ggml.model` string as stored. */
  readonly model: string;
  /** Token text per id (UTF-8 decoded). */
  readonly tokens: readonly string[];
  /** SPM merge priority per id (0 when the file has none). */
  readonly scores: Float32Array;
  /** {@link TokenType} per id (NORMAL when the file has none). */
  readonly types: Uint8Array;
  /** Exact text → id. */
  readonly tokenToId: ReadonlyMap<string, number>;
  /** BPE: `left + MERGE_KEY_SEPARATOR + right` → rank (array index); empty for SPM. */
  readonly mergeRanks: ReadonlyMap<string, number>;
  readonly bosId: number;
  readonly eosId: number;
  readonly unkId: number;
  /** −1 when none. */
  readonly sepId: number;
  /** −1 when none. */
  readonly padId: number;
  /** `tokenizer.ggml.add_bos_token` when the file has it (PowerInfer never reads it). */
  readonly addBosFlag: boolean | undefined;
  /** `tokenizer.ggml.add_eos_token` when the file has it (PowerInfer never reads it). */
  readonly addEosFlag: boolean | undefined;
}

/** Options of {@link loadVocab}. */
export interface LoadVocabOptions {
  /** Called with a warning (unknown tokenizer model); default: `console.warn`. */
  onWarning?: (message: string) => void;
}

function arrayOf(
  file: GgufFile,
  key: string,
  elementTypes: readonly GgufValueType[],
  what: string,
): readonly GgufScalar[] | undefined {
  const kv: GgufKv | undefined = file.get(key);
  if (!kv) return undefined;
  if (kv.type !== GgufValueType.ARRAY || !elementTypes.includes(kv.elementType)) {
    const found = kv.type === GgufValueType.ARRAY
      ? `an array of ${GgufValueType[kv.elementType]}`
      : GgufValueType[kv.type];
    throw new TokenizerError(`Key "${key}" must be an array of ${what}, found ${found}`);
  }
  return kv.value;
}

const INTEGER_TYPES: readonly GgufValueType[] = [
  GgufValueType.UINT8,
  GgufValueType.INT8,
  GgufValueType.UINT16,
  GgufValueType.INT16,
  GgufValueType.UINT32,
  GgufValueType.INT32,
  GgufValueType.UINT64,
  GgufValueType.INT64,
];

/** An optional integer key (any integer type accepted; PowerInfer writes UINT32). */
function optionalId(file: GgufFile, key: string): number | undefined {
  const kv = file.get(key);
  if (!kv) return undefined;
  if (kv.type === GgufValueType.ARRAY || !INTEGER_TYPES.includes(kv.type)) {
    throw new TokenizerError(
      `Key "${key}" must be an integer token id, found ${GgufValueType[kv.type]}`,
    );
  }
  return Number(kv.value);
}

function optionalBool(file: GgufFile, key: string): boolean | undefined {
  const kv = file.get(key);
  if (!kv) return undefined;
  if (kv.type !== GgufValueType.BOOL) {
    throw new TokenizerError(`Key "${key}" must be a BOOL, found ${GgufValueType[kv.type]}`);
  }
  return kv.value as boolean;
}

/**
 * Reads the vocabulary of a GGUF model or vocab-only file.
 *
 * @param file A parsed GGUF file.
 * @param options Warning sink.
 * @returns The vocabulary.
 * @throws {TokenizerError} If the tokens are missing, empty, duplicated or not strings, if
 * scores / token types / merges have the wrong type or length, or a BPE vocab has no merges.
 *
 * @example Read a vocabulary written in memory
 * ```ts
 * import { deepStrictEqual, equal } from "node:assert/strict";
 * import { GgufValueType, loadVocab, parseGguf, serializeGguf } from "../../mod.ts";
 * const bytes = await serializeGguf({
 *   metadata: [
 *     { key: "tokenizer.ggml.model", type: GgufValueType.STRING, value: "llama" },
 *     {
 *       key: "tokenizer.ggml.tokens",
 *       type: GgufValueType.ARRAY,
 *       elementType: GgufValueType.STRING,
 *       value: ["<unk>", "<s>", "</s>", "\u2581hi"],
 *     },
 *   ],
 *   tensors: [],
 * });
 * const vocab = loadVocab(parseGguf(bytes));
 * equal(vocab.kind, "spm");
 * deepStrictEqual([vocab.bosId, vocab.eosId, vocab.tokenToId.get("\u2581hi")], [1, 2, 3]);
 * ```
 */
export function loadVocab(file: GgufFile, options: LoadVocabOptions = {}): Vocab {
  const warn = options.onWarning ?? ((m: string) => console.warn(m));
  const modelKv = file.get(TOKENIZER_KEYS.model);
  if (!modelKv) {
    throw new TokenizerError(
      `The file has no vocabulary: key "${TOKENIZER_KEYS.model}" is missing`,
    );
  }
  if (modelKv.type !== GgufValueType.STRING) {
    throw new TokenizerError(`Key "${TOKENIZER_KEYS.model}" must be a STRING`);
  }
  const model = modelKv.value as string;
  let kind: "spm" | "bpe";
  if (model === "llama") kind = "spm";
  else if (model === "gpt2") kind = "bpe";
  else {
    warn(`Unknown tokenizer model "${model}": using the llama (SentencePiece) tokenizer`);
    kind = "spm";
  }

  const rawTokens = arrayOf(file, TOKENIZER_KEYS.tokens, [GgufValueType.STRING], "strings");
  if (!rawTokens) {
    throw new TokenizerError(
      `The file has no vocabulary: key "${TOKENIZER_KEYS.tokens}" is missing`,
    );
  }
  const nVocab = rawTokens.length;
  if (nVocab === 0) throw new TokenizerError(`Key "${TOKENIZER_KEYS.tokens}" is empty`);
  const tokens = rawTokens as readonly string[];
  const tokenToId = new Map<string, number>();
  for (let id = 0; id < nVocab; id++) {
    const text = tokens[id]!;
    if (text.length === 0) throw new TokenizerError(`Token ${id} is empty`);
    const previous = tokenToId.get(text);
    if (previous !== undefined) {
      throw new TokenizerError(
        `Tokens ${previous} and ${id} have the same text ${JSON.stringify(text)}`,
      );
    }
    tokenToId.set(text, id);
  }

  const scores = new Float32Array(nVocab);
  const rawScores = arrayOf(file, TOKENIZER_KEYS.scores, [GgufValueType.FLOAT32], "FLOAT32");
  if (rawScores) {
    if (rawScores.length !== nVocab) {
      throw new TokenizerError(
        `Key "${TOKENIZER_KEYS.scores}" has ${rawScores.length} entries: expected ${nVocab}`,
      );
    }
    for (let i = 0; i < nVocab; i++) scores[i] = rawScores[i] as number;
  }

  const types = new Uint8Array(nVocab).fill(TokenType.NORMAL);
  const rawTypes = arrayOf(file, TOKENIZER_KEYS.tokenType, INTEGER_TYPES, "integers");
  if (rawTypes) {
    if (rawTypes.length !== nVocab) {
      throw new TokenizerError(
        `Key "${TOKENIZER_KEYS.tokenType}" has ${rawTypes.length} entries: expected ${nVocab}`,
      );
    }
    for (let i = 0; i < nVocab; i++) {
      const t = Number(rawTypes[i]);
      if (!(t >= TokenType.NORMAL && t <= TokenType.BYTE)) {
        throw new TokenizerError(`Token ${i} has type ${t}: expected 1 to 6`);
      }
      types[i] = t;
    }
  }

  const mergeRanks = new Map<string, number>();
  if (kind === "bpe") {
    const merges = arrayOf(file, TOKENIZER_KEYS.merges, [GgufValueType.STRING], "strings");
    if (!merges) {
      throw new TokenizerError(
        `A BPE vocabulary needs merges: key "${TOKENIZER_KEYS.merges}" is missing`,
      );
    }
    for (let rank = 0; rank < merges.length; rank++) {
      const m = merges[rank] as string;
      const space = m.indexOf(" ", 1);
      if (space < 0) {
        throw new TokenizerError(`Merge ${rank} ${JSON.stringify(m)} has no "left right" form`);
      }
      const key = m.slice(0, space) + MERGE_KEY_SEPARATOR + m.slice(space + 1);
      if (!mergeRanks.has(key)) mergeRanks.set(key, rank);
    }
  }

  // Ids outside the vocabulary are ignored (the default stays), like the reference.
  const pick = (key: string, fallback: number) => {
    const v = optionalId(file, key);
    return v !== undefined && v >= 0 && v < nVocab ? v : fallback;
  };
  const spm = kind === "spm";
  return {
    kind,
    model,
    tokens,
    scores,
    types,
    tokenToId,
    mergeRanks,
    bosId: pick(TOKENIZER_KEYS.bosId, spm ? 1 : 11),
    eosId: pick(TOKENIZER_KEYS.eosId, spm ? 2 : 11),
    unkId: pick(TOKENIZER_KEYS.unkId, spm ? 0 : -1),
    sepId: pick(TOKENIZER_KEYS.sepId, -1),
    padId: pick(TOKENIZER_KEYS.padId, -1),
    addBosFlag: optionalBool(file, TOKENIZER_KEYS.addBos),
    addEosFlag: optionalBool(file, TOKENIZER_KEYS.addEos),
  };
}

/**
 * The special-token cache (spec §1): every token of more than one character that cannot be
 * written as the concatenation of two vocabulary tokens split at a character boundary.
 * Sorted longest first (then by id), the order in which `parseSpecial` matches them; the
 * reference uses hash-map order, which only matters for overlapping special tokens.
 *
 * @param vocab The vocabulary.
 * @returns `[text, id]` pairs.
 */
export function findSpecialTokens(vocab: Vocab): [string, number][] {
  const out: [string, number][] = [];
  const { tokens, tokenToId } = vocab;
  for (let id = 0; id < tokens.length; id++) {
    const text = tokens[id]!;
    const first = text.codePointAt(0)!;
    const firstLength = first > 0xffff ? 2 : 1;
    if (text.length <= firstLength) continue; // a single character
    let splittable = false;
    for (let i = firstLength; i < text.length;) {
      if (tokenToId.has(text.slice(0, i)) && tokenToId.has(text.slice(i))) {
        splittable = true;
        break;
      }
      i += text.codePointAt(i)! > 0xffff ? 2 : 1;
    }
    if (!splittable) out.push([text, id]);
  }
  out.sort((a, b) => b[0].length - a[0].length || a[1] - b[1]);
  return out;
}
