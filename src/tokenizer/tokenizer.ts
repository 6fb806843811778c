/**
 * The tokenizer of a GGUF model or vocab-only file: SPM (LLaMA, Bamboo) or byte-level BPE
 * (Falcon), chosen by `tokenizer.ggml.model`, with decoding and a streaming decoder.
 *
 * Behaviour follows spec/tokenizer.md (PowerInfer's llama.cpp):
 * - `encode(text, { parseSpecial: true })` equals the reference's `special = true`: special
 *   tokens written in the text (`<s>`, `<0x0A>`, `<|endoftext|>`…) become their ids, and the SPM
 *   dummy-prefix space is NOT added (so `main`'s prompt "Once" gives 26222, not "▁Once" 9038).
 *   Pass `dummyPrefix` to decide the space separately.
 * - Lone UTF-16 surrogates in the input are replaced by U+FFFD before tokenizing (the UTF-8 the
 *   reference works on cannot hold them), so `decode(encode(s)) === s.toWellFormed()`.
 * - Decoding drops the dummy-prefix space of the first non-BOS token (SPM) and turns invalid
 *   UTF-8 (a byte sequence cut by the end of `ids`) into U+FFFD. Control tokens decode to "".
 * - SPM: a literal "▁" (U+2581) in the input is the space marker and decodes as a space.
 * - BPE: a byte with no token of its own throws {@link TokenizerError}, as the reference does
 *   (the Falcon vocabulary lacks 14 control characters and the UTF-8 lead byte 0xF2, i.e.
 *   U+80000–U+BFFFF); everything else round-trips exactly.
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";
import { FileSource } from "../torch/source.ts";
import { type GgufByteSource, type GgufFile, parseGgufSource } from "../gguf/reader.ts";
import { BpeEncoder, UNICODE_TO_BYTE } from "./bpe.ts";
import { SpmEncoder } from "./spm.ts";
import {
  findSpecialTokens,
  loadVocab,
  type LoadVocabOptions,
  SPM_SPACE,
  TokenType,
  type Vocab,
} from "./vocab.ts";

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Put BOS first; default {@link Tokenizer.addBos}. */
  addBos?: boolean;
  /** Recognise special/control tokens written in the text (reference `special = true`). */
  parseSpecial?: boolean;
  /** SPM only: prefix each text fragment with a space; default `!parseSpecial` (reference). */
  dummyPrefix?: boolean;
}

/** Options of {@link Tokenizer.decode} and {@link Tokenizer.createStreamDecoder}. */
export interface DecodeOptions {
  /**
   * SPM only: drop one leading space from the first non-BOS token's piece (the dummy prefix),
   * like the reference's detokenizer. Default true. Pass false to decode a continuation, e.g.
   * generated tokens printed after the prompt (`main` prints raw pieces).
   */
  stripLeadingSpace?: boolean;
}

/** Incremental detokenizer: returns only complete UTF-8 characters. */
export interface StreamDecoder {
  /** Feeds one id; returns the text that became complete (maybe ""). */
  push(id: number): string;
  /** Ends the stream; returns what is left (an incomplete sequence as U+FFFD). */
  flush(): string;
}

/** Text ↔ token ids for one vocabulary (docs/ARCHITECTURE.md contract). */
export interface Tokenizer {
  readonly kind: "spm" | "bpe";
  readonly nVocab: number;
  readonly bosId: number;
  readonly eosId: number;
  /** Whether `encode` adds BOS by default: true for SPM vocabularies, like PowerInfer `main`. */
  readonly addBos: boolean;
  encode(text: string, opts?: EncodeOptions): number[];
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  /** Raw bytes of one token's piece ("" for control tokens and out-of-range ids). */
  tokenBytes(id: number): Uint8Array;
  createStreamDecoder(opts?: DecodeOptions): StreamDecoder;
}

const utf8 = new TextEncoder();
const EMPTY = new Uint8Array(0);

/**
 * A tokenizer over a loaded {@link Vocab}; see the module doc for the exact behaviour. Build it
 * with {@link tokenizerFromGguf} or {@link loadTokenizer}.
 *
 * @example A tiny byte-level BPE vocabulary, streamed one id at a time
 * ```ts
 * import { deepStrictEqual, equal } from "node:assert/strict";
 * import { VocabTokenizer } from "./tokenizer.ts";
 * const tokens = ["a", "b", "ab", "\u0120", "\u0120ab", "\u00c3", "\u00a9"]; // Ġ = " ", Ã© = "é"
 * const tok = new VocabTokenizer({
 *   kind: "bpe", model: "gpt2", tokens, scores: new Float32Array(7), types: new Uint8Array(7).fill(1),
 *   tokenToId: new Map(tokens.map((t, i) => [t, i])),
 *   mergeRanks: new Map([["a\0b", 0], ["\u0120\0ab", 1]]),
 *   bosId: 11, eosId: 11, unkId: -1, sepId: -1, padId: -1, addBosFlag: undefined, addEosFlag: undefined,
 * });
 * const ids = tok.encode("ab abé");
 * deepStrictEqual(ids, [2, 4, 5, 6]);
 * const stream = tok.createStreamDecoder();
 * deepStrictEqual(ids.map((id) => stream.push(id)), ["ab", " ab", "", "é"]); // never half of "é"
 * equal(stream.flush(), "");
 * ```
 */
export class VocabTokenizer implements Tokenizer {
  readonly vocab: Vocab;
  readonly kind: "spm" | "bpe";
  readonly nVocab: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly addBos: boolean;
  readonly #pieces: (Uint8Array | undefined)[];
  #spm?: SpmEncoder;
  #bpe?: BpeEncoder;
  #special?: [string, number][];

  /** @param vocab A vocabulary, usually from {@link loadVocab}. */
  constructor(vocab: Vocab) {
    this.vocab = vocab;
    this.kind = vocab.kind;
    this.nVocab = vocab.tokens.length;
    this.bosId = vocab.bosId;
    this.eosId = vocab.eosId;
    this.addBos = vocab.kind === "spm";
    this.#pieces = new Array(this.nVocab);
  }

  /** The special-token cache `parseSpecial` matches, longest first (spec §1). */
  get specialTokens(): readonly (readonly [string, number])[] {
    return this.#special ??= findSpecialTokens(this.vocab);
  }

  /**
   * The newline token the reference's `--no-penalize-nl` uses: `<0x0A>` for SPM; for BPE the
   * first id of tokenizing "Ċ" as text (138 for Falcon, a reference bug reproduced).
   */
  get nlId(): number {
    if (this.kind === "spm") return this.vocab.tokenToId.get("<0x0A>") ?? -1;
    return this.encode("\u010a", { addBos: false })[0] ?? -1;
  }

  /**
   * Text → ids.
   *
   * @param text Any string; lone surrogates become U+FFFD.
   * @param opts BOS, special-token parsing, SPM dummy prefix.
   * @returns The ids.
   * @throws {TokenizerError} If the vocabulary cannot represent some character.
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const addBos = opts.addBos ?? this.addBos;
    const parseSpecial = opts.parseSpecial ?? false;
    const dummyPrefix = opts.dummyPrefix ?? !parseSpecial;
    const out: number[] = [];
    if (addBos && this.bosId >= 0) out.push(this.bosId);
    if (text.length === 0) return out;
    text = text.toWellFormed();
    const fragments: (string | number)[] = parseSpecial
      ? splitSpecial(text, this.specialTokens)
      : [text];
    for (const fragment of fragments) {
      if (typeof fragment === "number") out.push(fragment);
      else if (this.kind === "spm") {
        (this.#spm ??= new SpmEncoder(this.vocab)).encode(fragment, dummyPrefix, out);
      } else (this.#bpe ??= new BpeEncoder(this.vocab)).encode(fragment, out);
    }
    return out;
  }

  /**
   * Raw bytes of one token's piece: SPM "▁" → space, byte tokens → their byte, "▅" for
   * unknown, nothing for control tokens; BPE text mapped back through the byte table.
   *
   * @param id Token id; out of range gives an empty array.
   * @returns The bytes (shared; do not modify).
   */
  tokenBytes(id: number): Uint8Array {
    if (!Number.isInteger(id) || id < 0 || id >= this.nVocab) return EMPTY;
    let piece = this.#pieces[id];
    if (!piece) {
      piece = this.#piece(id);
      this.#pieces[id] = piece;
    }
    return piece;
  }

  #piece(id: number): Uint8Array {
    const text = this.vocab.tokens[id]!;
    const type = this.vocab.types[id]!;
    if (this.kind === "spm") {
      if (type === TokenType.NORMAL) return utf8.encode(text.replaceAll(SPM_SPACE, " "));
      if (type === TokenType.UNKNOWN) return utf8.encode("\u2585");
      if (type === TokenType.BYTE) {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
        if (!m) throw new TokenizerError(`Byte token ${id} has text ${JSON.stringify(text)}`);
        return Uint8Array.of(parseInt(m[1]!, 16));
      }
      return EMPTY;
    }
    if (type !== TokenType.NORMAL) return EMPTY;
    const bytes: number[] = [];
    for (const ch of text) {
      const cp = ch.codePointAt(0)!;
      const b = cp < UNICODE_TO_BYTE.length ? UNICODE_TO_BYTE[cp]! : -1;
      if (b >= 0) bytes.push(b);
      else bytes.push(...utf8.encode(ch)); // not byte-level text: keep it as UTF-8
    }
    return Uint8Array.from(bytes);
  }

  /** Index of the piece that loses one leading space (SPM): after a leading BOS. */
  #spaceDropIndex(firstId: number | undefined, opts: DecodeOptions): number {
    if (this.kind !== "spm" || opts.stripLeadingSpace === false) return -1;
    return firstId === this.bosId ? 1 : 0;
  }

  /**
   * Ids → text: pieces concatenated as bytes, then decoded as UTF-8 (invalid → U+FFFD).
   *
   * @param ids Token ids; out-of-range ids decode to nothing.
   * @param opts Whether to drop the SPM dummy-prefix space (default true).
   * @returns The text.
   */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const dropAt = this.#spaceDropIndex(ids[0], opts);
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      let piece = this.tokenBytes(ids[i]!);
      if (i === dropAt && piece[0] === 0x20) piece = piece.subarray(1);
      parts.push(piece);
      total += piece.length;
    }
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
  }

  /**
   * A decoder fed one id at a time whose outputs, joined with `flush()`, equal `decode(ids)`;
   * it never returns part of a UTF-8 character.
   *
   * @param opts Whether to drop the SPM dummy-prefix space (default true).
   * @returns A fresh decoder; `flush()` also resets it for a new stream.
   */
  createStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
    let index = 0;
    let dropAt = -1;
    return {
      push: (id: number) => {
        if (index === 0) dropAt = this.#spaceDropIndex(id, opts);
        let piece = this.tokenBytes(id);
        if (index === dropAt && piece[0] === 0x20) piece = piece.subarray(1);
        index++;
        return decoder.decode(piece, { stream: true });
      },
      flush: () => {
        index = 0;
        return decoder.decode();
      },
    };
  }
}

/**
 * Splits text at every occurrence of each special token (in the given order), like the
 * reference's partition: earlier tokens claim their occurrences first.
 */
function splitSpecial(
  text: string,
  specials: readonly (readonly [string, number])[],
): (string | number)[] {
  let fragments: (string | number)[] = [text];
  for (const [token, id] of specials) {
    const nextFragments: (string | number)[] = [];
    for (const f of fragments) {
      if (typeof f === "number" || !f.includes(token)) {
        nextFragments.push(f);
        continue;
      }
      let from = 0;
      for (let at = f.indexOf(token); at >= 0; at = f.indexOf(token, from)) {
        if (at > from) nextFragments.push(f.slice(from, at));
        nextFragments.push(id);
        from = at + token.length;
      }
      if (from < f.length) nextFragments.push(f.slice(from));
    }
    fragments = nextFragments;
  }
  return fragments;
}

/**
 * The tokenizer of a parsed GGUF model or vocab-only file.
 *
 * @param file A parsed GGUF file with `tokenizer.ggml.*` metadata.
 * @param options Warning sink (unknown tokenizer model).
 * @returns The tokenizer (SPM for "llama", BPE for "gpt2").
 * @throws {TokenizerError} If the vocabulary is missing or inconsistent.
 *
 * @example Build a tiny SPM vocabulary in memory and round-trip a text
 * ```ts
 * import { deepStrictEqual, equal } from "node:assert/strict";
 * import { parseGguf, serializeGguf, tokenizerFromGguf, GgufValueType } from "../../mod.ts";
 * const tokens = ["<unk>", "<s>", "</s>", "\u2581", "h", "i", "hi", "\u2581hi"];
 * type Element = GgufValueType.STRING | GgufValueType.FLOAT32 | GgufValueType.INT32;
 * const array = (elementType: Element, value: (string | number)[]) =>
 *   ({ type: GgufValueType.ARRAY, elementType, value }) as const;
 * const bytes = await serializeGguf({
 *   metadata: [
 *     { key: "tokenizer.ggml.model", type: GgufValueType.STRING, value: "llama" },
 *     { key: "tokenizer.ggml.tokens", ...array(GgufValueType.STRING, tokens) },
 *     { key: "tokenizer.ggml.scores", ...array(GgufValueType.FLOAT32, [0, 0, 0, -4, -3, -3, -2, -1]) },
 *     { key: "tokenizer.ggml.token_type", ...array(GgufValueType.INT32, [2, 3, 3, 1, 1, 1, 1, 1]) },
 *   ],
 *   tensors: [],
 * });
 * const tok = tokenizerFromGguf(parseGguf(bytes));
 * deepStrictEqual(tok.encode("hi"), [1, 7]); // BOS, "▁hi"
 * deepStrictEqual(tok.encode("hi", { addBos: false, parseSpecial: true }), [6]); // no dummy prefix
 * equal(tok.decode(tok.encode("hi")), "hi");
 * ```
 */
export function tokenizerFromGguf(file: GgufFile, options?: LoadVocabOptions): VocabTokenizer {
  return new VocabTokenizer(loadVocab(file, options));
}

/** A byte source reading windows of a file on demand (only the GGUF header gets read). */
function fileSource(path: string): GgufByteSource {
  const file = new FileSource(path);
  return {
    byteLength: file.byteLength,
    view: (offsetBytes, length) => file.read(offsetBytes, length),
    close: () => file.close(),
  };
}

/**
 * Loads the tokenizer of a model or vocab-only GGUF file, reading only its header (tensor data
 * stays on disk; no native library needed).
 *
 * @param path File path.
 * @param options Warning sink.
 * @returns The tokenizer.
 * @throws {TokenizerError} If the vocabulary is missing or inconsistent.
 * @throws {GgufFormatError} If the file is not GGUF.
 * @throws {MappedFileError} If the file does not exist or is a directory.
 *
 * @example Tokenize with the LLaMA vocabulary
 * ```ts ignore
 * const tok = loadTokenizer("ggml-vocab-llama.gguf");
 * tok.encode("Hello world"); // [1, 15043, 3186]
 * ```
 */
export function loadTokenizer(path: string, options?: LoadVocabOptions): VocabTokenizer {
  const file = parseGgufSource(fileSource(path));
  try {
    return tokenizerFromGguf(file, options);
  } finally {
    file.close();
  }
}
