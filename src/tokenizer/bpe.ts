/**
 * Byte-level BPE tokenizer of Falcon (GPT-2 style) vocabularies (spec/tokenizer.md §4): the
 * reference's hand-written pre-tokenizer state machine, the GPT-2 byte→unicode map, then merges
 * by rank with a priority queue (O(n log n) per word).
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";
import { MergeQueue } from "./merge_queue.ts";
import { CodepointClass, codepointClasses } from "./unicode.ts";
import { MERGE_KEY_SEPARATOR, type Vocab } from "./vocab.ts";

const OTHER = CodepointClass.OTHER;
const LETTER = CodepointClass.LETTER;
const DIGIT = CodepointClass.DIGIT;
const WHITESPACE = CodepointClass.WHITESPACE;

/** GPT-2 byte → code point: printable Latin-1 maps to itself, the other 68 bytes to U+0100…. */
export const BYTE_TO_UNICODE: Uint16Array = (() => {
  const map = new Uint16Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    map[b] = printable ? b : 0x100 + extra++;
  }
  return map;
})();

/** Inverse of {@link BYTE_TO_UNICODE}: code point (< 0x144) → byte, −1 elsewhere. */
export const UNICODE_TO_BYTE: Int16Array = (() => {
  const inv = new Int16Array(0x144).fill(-1);
  for (let b = 0; b < 256; b++) inv[BYTE_TO_UNICODE[b]!] = b;
  return inv;
})();

/** Mode of the pre-tokenizer state machine. */
const enum Mode {
  NONE,
  LETTER,
  DIGIT,
  OTHER,
  SPACE_RUN,
}

const APOSTROPHE = 0x27;
const SPACE = 0x20;

/**
 * Splits code points into pre-tokenizer words exactly like the reference state machine
 * (spec §4.1). Words are contiguous, so each is reported as a `[start, end)` index range.
 *
 * @param cps Code points of one text fragment.
 * @param emit Called once per word, in order.
 */
export function pretokenize(
  cps: ArrayLike<number>,
  emit: (start: number, end: number) => void,
): void {
  const cls = codepointClasses();
  const count = cps.length;
  const classOf = (i: number) => (i < count ? cls[cps[i]!]! : OTHER);
  let wordStart = 0;
  let mode = Mode.NONE;
  for (let i = 0; i < count;) {
    const c = cps[i]!;
    const rem = count - i;
    if (c === APOSTROPHE && rem >= 2) {
      const n1 = cps[i + 1]!;
      let len = 0;
      if (n1 === 0x73 || n1 === 0x74 || n1 === 0x6d || n1 === 0x64) len = 2; // s t m d
      else if (rem >= 3) {
        const n2 = cps[i + 2]!;
        if (
          (n1 === 0x72 && n2 === 0x65) || (n1 === 0x76 && n2 === 0x65) || // re ve
          (n1 === 0x6c && n2 === 0x6c) // ll
        ) len = 3;
      }
      if (len > 0) {
        if (i > wordStart) emit(wordStart, i);
        emit(i, i + len);
        i += len;
        wordStart = i;
        continue;
      }
    }
    const cc = cls[c]!;
    const c1 = classOf(i + 1);
    let split = false;
    if (mode === Mode.NONE) {
      const leadingSpace = wordStart === i && c === SPACE;
      if (cc === LETTER || (leadingSpace && c1 === LETTER)) mode = Mode.LETTER;
      else if (cc === DIGIT || (leadingSpace && c1 === DIGIT)) mode = Mode.DIGIT;
      else if (cc === OTHER || (leadingSpace && c1 === OTHER)) mode = Mode.OTHER;
      else if (cc === WHITESPACE && c1 === WHITESPACE) mode = Mode.SPACE_RUN;
      else if (cc === WHITESPACE) split = true;
    } else if (mode === Mode.LETTER) split = cc !== LETTER;
    else if (mode === Mode.DIGIT) split = cc !== DIGIT;
    else if (mode === Mode.OTHER) split = cc !== OTHER;
    else split = c1 === LETTER || c1 === DIGIT; // space run ends before a word
    if (i + 1 === count) {
      emit(wordStart, count);
      return;
    }
    if (split) {
      if (i > wordStart) emit(wordStart, i);
      wordStart = i;
      mode = Mode.NONE;
    }
    i++;
  }
}

/** Reusable state of one BPE tokenizer (word cache, symbol buffers, the queue). */
export class BpeEncoder {
  readonly #vocab: Vocab;
  readonly #queue = new MergeQueue(256);
  readonly #cache = new Map<string, readonly number[]>();
  #length = new Int32Array(0);
  #prev = new Int32Array(0);
  #next = new Int32Array(0);

  constructor(vocab: Vocab) {
    this.#vocab = vocab;
  }

  /**
   * Tokenizes one text fragment, appending ids to `out`.
   *
   * @param fragment Well-formed text (no lone surrogates).
   * @param out Receives the ids.
   * @throws {TokenizerError} If a final symbol is neither a token nor made of one-byte tokens.
   */
  encode(fragment: string, out: number[]): void {
    const cps: number[] = [];
    for (let i = 0; i < fragment.length; i++) {
      const c = fragment.codePointAt(i)!;
      cps.push(c);
      if (c > 0xffff) i++;
    }
    const mapped: number[] = [];
    pretokenize(cps, (start, end) => {
      // UTF-8 bytes of the word, each mapped through the byte→unicode table.
      mapped.length = 0;
      for (let i = start; i < end; i++) {
        const c = cps[i]!;
        if (c < 0x80) mapped.push(BYTE_TO_UNICODE[c]!);
        else if (c < 0x800) {
          mapped.push(BYTE_TO_UNICODE[0xc0 | (c >> 6)]!, BYTE_TO_UNICODE[0x80 | (c & 63)]!);
        } else if (c < 0x10000) {
          mapped.push(
            BYTE_TO_UNICODE[0xe0 | (c >> 12)]!,
            BYTE_TO_UNICODE[0x80 | ((c >> 6) & 63)]!,
            BYTE_TO_UNICODE[0x80 | (c & 63)]!,
          );
        } else {
          mapped.push(
            BYTE_TO_UNICODE[0xf0 | (c >> 18)]!,
            BYTE_TO_UNICODE[0x80 | ((c >> 12) & 63)]!,
            BYTE_TO_UNICODE[0x80 | ((c >> 6) & 63)]!,
            BYTE_TO_UNICODE[0x80 | (c & 63)]!,
          );
        }
      }
      let word = "";
      for (let i = 0; i < mapped.length; i += 4096) {
        word += String.fromCharCode(...mapped.slice(i, i + 4096));
      }
      let ids = this.#cache.get(word);
      if (!ids) {
        ids = this.#encodeWord(word);
        if (this.#cache.size >= 65536) this.#cache.clear();
        this.#cache.set(word, ids);
      }
      for (const id of ids) out.push(id);
    });
  }

  /** Merges one mapped word (one UTF-16 unit per symbol) by rank. */
  #encodeWord(word: string): number[] {
    const n = word.length;
    const { tokenToId, mergeRanks } = this.#vocab;
    if (this.#length.length < n) {
      const cap = Math.max(n, this.#length.length * 2, 64);
      this.#length = new Int32Array(cap);
      this.#prev = new Int32Array(cap);
      this.#next = new Int32Array(cap);
    }
    const length = this.#length;
    const prev = this.#prev;
    const next = this.#next;
    for (let i = 0; i < n; i++) {
      length[i] = 1;
      prev[i] = i - 1;
      next[i] = i + 1;
    }
    next[n - 1] = -1;
    const queue = this.#queue;
    queue.clear();
    // Symbol i starts at index i of `word` (merged symbols keep their left index).
    const tryPair = (left: number, right: number) => {
      if (left < 0 || right < 0) return;
      const key = word.slice(left, left + length[left]!) + MERGE_KEY_SEPARATOR +
        word.slice(right, right + length[right]!);
      const rank = mergeRanks.get(key);
      if (rank !== undefined) queue.push(rank, left, right, length[left]! + length[right]!);
    };
    for (let i = 1; i < n; i++) tryPair(i - 1, i);
    while (queue.pop()) {
      const left = queue.left;
      const right = queue.right;
      const ll = length[left]!;
      const rl = length[right]!;
      // Stale when a side is gone or grew (symbols only grow, so equal text = equal length).
      if (ll === 0 || rl === 0 || ll + rl !== queue.length) continue;
      length[left] = ll + rl;
      length[right] = 0;
      const after = next[right]!;
      next[left] = after;
      if (after >= 0) prev[after] = left;
      tryPair(prev[left]!, left);
      tryPair(left, after);
    }
    const ids: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) {
      const piece = word.slice(i, i + length[i]!);
      const id = tokenToId.get(piece);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      // The reference looks up each byte of the symbol's UTF-8 text as a one-byte token and
      // throws when one is missing (only ASCII-mapped symbols can succeed).
      for (const ch of piece) {
        const byteId = ch.charCodeAt(0) < 0x80 ? tokenToId.get(ch) : undefined;
        if (byteId === undefined) {
          const bytes = [...piece].map((c) =>
            "0x" + UNICODE_TO_BYTE[c.charCodeAt(0)]!.toString(16).toUpperCase().padStart(2, "0")
          );
          throw new TokenizerError(
            `Cannot tokenize the byte sequence ${
              bytes.join(" ")
            }: the vocabulary has no token for it`,
          );
        }
        ids.push(byteId);
      }
    }
    return ids;
  }
}
