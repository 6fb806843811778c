/**
 * Hugging Face `tokenizer.json` reader (the parts a GGUF vocabulary needs): the BPE vocab,
 * merges, and added tokens with their `special` flag.
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";

/** One entry of `added_tokens`. */
export interface HfAddedToken {
  id: number;
  content: string;
  special: boolean;
}

/** The parsed parts of a `tokenizer.json`. */
export interface HfTokenizerJson {
  /** `model.type`, e.g. "BPE". */
  modelType: string;
  /** token → id from `model.vocab`. */
  vocab: Map<string, number>;
  /** `model.merges` when it is a list of "a b" strings, else undefined. */
  merges: string[] | undefined;
  addedTokens: HfAddedToken[];
}

/**
 * Parses `tokenizer.json`.
 *
 * @param text The JSON text.
 * @returns Vocab, string merges (if present in that form) and added tokens.
 * @throws {TokenizerError} If the JSON is malformed or the vocab is not a token → id object.
 *
 * @example A BPE vocab with one added token
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { parseHfTokenizerJson } from "./hf_tokenizer.ts";
 * const t = parseHfTokenizerJson(JSON.stringify({
 *   model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2 }, merges: ["a b"] },
 *   added_tokens: [{ id: 3, content: "<eos>", special: true }],
 * }));
 * equal(t.vocab.get("ab"), 2);
 * equal(t.addedTokens[0]!.special, true);
 * ```
 */
export function parseHfTokenizerJson(text: string): HfTokenizerJson {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new TokenizerError("tokenizer.json is not valid JSON", { cause });
  }
  if (!json || typeof json !== "object") {
    throw new TokenizerError("tokenizer.json is not an object");
  }
  const model = (json as Record<string, unknown>).model as Record<string, unknown> | undefined;
  if (!model || typeof model !== "object") {
    throw new TokenizerError("tokenizer.json has no model object");
  }
  const rawVocab = model.vocab;
  if (!rawVocab || typeof rawVocab !== "object" || Array.isArray(rawVocab)) {
    throw new TokenizerError(
      `tokenizer.json model.vocab is not a token → id object (model type ${model.type})`,
    );
  }
  const vocab = new Map<string, number>();
  for (const [tok, id] of Object.entries(rawVocab)) {
    if (!Number.isSafeInteger(id) || (id as number) < 0) {
      throw new TokenizerError(`tokenizer.json token ${JSON.stringify(tok)} has id ${id}`);
    }
    vocab.set(tok, id as number);
  }
  let merges: string[] | undefined;
  if (
    Array.isArray(model.merges) && model.merges.length > 0 && typeof model.merges[0] === "string"
  ) {
    if (!model.merges.every((m) => typeof m === "string")) {
      throw new TokenizerError("tokenizer.json model.merges mixes strings and other values");
    }
    merges = model.merges as string[];
  }
  const addedTokens: HfAddedToken[] = [];
  const added = (json as Record<string, unknown>).added_tokens;
  if (added !== undefined && added !== null) {
    if (!Array.isArray(added)) {
      throw new TokenizerError("tokenizer.json added_tokens is not a list");
    }
    for (const a of added) {
      const { id, content, special } = (a ?? {}) as Record<string, unknown>;
      if (!Number.isSafeInteger(id) || (id as number) < 0 || typeof content !== "string") {
        throw new TokenizerError(`tokenizer.json added token ${JSON.stringify(a)} is malformed`);
      }
      addedTokens.push({ id: id as number, content, special: special === true });
    }
  }
  return { modelType: String(model.type ?? ""), vocab, merges, addedTokens };
}
