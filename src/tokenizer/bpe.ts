/**
 * Byte-level BPE tokenizer of Falcon (GPT-2 style) vocabularies (spec/tokenizer.md §4): the
 * reference's hand-written pre-tokenizer state machine, the GPT-2 byte→unicode map, then merges
 * by rank with a priority queue (O(n log n) per word).
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";
import { MergeQueue } from "./merge_queue.ts";
import { PairTable } from "./pair_table.ts";
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
/** Buffers above this many entries are dropped after the call that needed them. */
const BIG = 1 << 16;
/** Slots of the word cache (a power of two) and the longest cached word, in code points. */
const CACHE_SLOTS = 4096;
const CACHE_WORD_MAX = 16;
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

/** Merge tables over symbol ids ("sids"): vocabulary ids, then merge texts missing from it. */
interface MergeTables {
  /** (left sid, right sid) → merge rank (lowest rank kept). */
  rankOf: PairTable;
  /** Rank → sid of the merged text. */
  resultOf: Int32Array;
  /** Texts of sids ≥ nVocab. */
  extraTexts: string[];
  /** sid of each one-unit symbol (mapped byte, code < 0x144), −1 when it is no text we know. */
  unitSid: Int32Array;
}

function buildMergeTables(vocab: Vocab): MergeTables {
  const nVocab = vocab.tokens.length;
  const extra = new Map<string, number>();
  const extraTexts: string[] = [];
  const sidOf = (text: string): number => {
    const id = vocab.tokenToId.get(text) ?? extra.get(text);
    if (id !== undefined) return id;
    const sid = nVocab + extraTexts.length;
    extra.set(text, sid);
    extraTexts.push(text);
    return sid;
  };
  const merges: [number, number, number, number][] = [];
  let maxRank = -1;
  for (const [key, rank] of vocab.mergeRanks) {
    const cut = key.indexOf(MERGE_KEY_SEPARATOR);
    const left = key.slice(0, cut);
    const right = key.slice(cut + 1);
    merges.push([sidOf(left), sidOf(right), sidOf(left + right), rank]);
    if (rank > maxRank) maxRank = rank;
  }
  const rankOf = new PairTable(merges.length);
  const resultOf = new Int32Array(maxRank + 1);
  for (const [l, r, result, rank] of merges) {
    rankOf.setIfAbsent(l, r, rank); // pairs are unique: mergeRanks kept the lowest rank
    resultOf[rank] = result;
  }
  const unitSid = new Int32Array(0x144);
  for (let u = 0; u < 0x144; u++) {
    const text = String.fromCharCode(u);
    unitSid[u] = vocab.tokenToId.get(text) ?? extra.get(text) ?? -1;
  }
  return { rankOf, resultOf, extraTexts, unitSid };
}

/**
 * Reusable state of one BPE tokenizer (merge tables, word cache, symbol buffers, the queue).
 * Symbols carry integer ids so candidate lookups are one {@link PairTable} probe. Recent words
 * sit in a direct-mapped cache keyed by a hash of their code points (no strings, no `Map`:
 * on text where few words repeat a string-keyed cache cost more than it saved).
 */
export class BpeEncoder {
  readonly #vocab: Vocab;
  #queue = new MergeQueue(256);
  /** Code points of the cached word per slot (CACHE_WORD_MAX each) and its length (−1 = empty). */
  readonly #cacheWords = new Int32Array(CACHE_SLOTS * CACHE_WORD_MAX);
  readonly #cacheLengths = new Int32Array(CACHE_SLOTS).fill(-1);
  readonly #cacheIds: (readonly number[] | undefined)[] = new Array(CACHE_SLOTS);
  #tables?: MergeTables;
  #units = new Int32Array(64);
  #sid = new Int32Array(64);
  #length = new Int32Array(64);
  #prev = new Int32Array(64);
  #next = new Int32Array(64);
  #cps = new Int32Array(256);

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
    if (this.#cps.length < fragment.length) this.#cps = new Int32Array(fragment.length);
    const cps = this.#cps;
    let count = 0;
    for (let i = 0; i < fragment.length; count++) {
      const c = fragment.codePointAt(i)!;
      cps[count] = c;
      i += c > 0xffff ? 2 : 1;
    }
    const words = this.#cacheWords;
    const lengths = this.#cacheLengths;
    const cached = this.#cacheIds;
    pretokenize(cps.subarray(0, count), (start, end) => {
      const n = end - start;
      let h = 0x811c9dc5;
      for (let i = start; i < end; i++) h = Math.imul(h ^ cps[i]!, 0x01000193);
      const slot = (h ^ (h >>> 16)) & (CACHE_SLOTS - 1);
      const at = slot * CACHE_WORD_MAX;
      let ids: readonly number[] | undefined;
      if (lengths[slot] === n) {
        let same = true;
        for (let i = 0; i < n && same; i++) same = words[at + i] === cps[start + i];
        if (same) ids = cached[slot];
      }
      if (!ids) {
        ids = this.#encodeWord(cps, start, end);
        if (n <= CACHE_WORD_MAX) {
          for (let i = 0; i < n; i++) words[at + i] = cps[start + i]!;
          lengths[slot] = n;
          cached[slot] = ids;
        }
      }
      for (let i = 0; i < ids.length; i++) out.push(ids[i]!);
    });
    // Do not keep megabytes of buffers alive after one huge fragment or word.
    if (this.#cps.length > BIG) this.#cps = new Int32Array(256);
    if (this.#units.length > BIG) {
      this.#units = new Int32Array(64);
      this.#sid = new Int32Array(64);
      this.#length = new Int32Array(64);
      this.#prev = new Int32Array(64);
      this.#next = new Int32Array(64);
    }
    if (this.#queue.capacity > BIG) this.#queue = new MergeQueue(256);
  }

  /** Maps code points [start, end) to byte-level units and merges them by rank. */
  #encodeWord(cps: Int32Array, start: number, end: number): number[] {
    const tables = this.#tables ??= buildMergeTables(this.#vocab);
    if (this.#units.length < (end - start) * 4) {
      const cap = (end - start) * 4;
      this.#units = new Int32Array(cap);
      this.#sid = new Int32Array(cap);
      this.#length = new Int32Array(cap);
      this.#prev = new Int32Array(cap);
      this.#next = new Int32Array(cap);
    }
    // UTF-8 bytes of the word, each mapped through the byte→unicode table: one unit per symbol.
    const units = this.#units;
    let n = 0;
    for (let i = start; i < end; i++) {
      const c = cps[i]!;
      if (c < 0x80) units[n++] = BYTE_TO_UNICODE[c]!;
      else if (c < 0x800) {
        units[n++] = BYTE_TO_UNICODE[0xc0 | (c >> 6)]!;
        units[n++] = BYTE_TO_UNICODE[0x80 | (c & 63)]!;
      } else if (c < 0x10000) {
        units[n++] = BYTE_TO_UNICODE[0xe0 | (c >> 12)]!;
        units[n++] = BYTE_TO_UNICODE[0x80 | ((c >> 6) & 63)]!;
        units[n++] = BYTE_TO_UNICODE[0x80 | (c & 63)]!;
      } else {
        units[n++] = BYTE_TO_UNICODE[0xf0 | (c >> 18)]!;
        units[n++] = BYTE_TO_UNICODE[0x80 | ((c >> 12) & 63)]!;
        units[n++] = BYTE_TO_UNICODE[0x80 | ((c >> 6) & 63)]!;
        units[n++] = BYTE_TO_UNICODE[0x80 | (c & 63)]!;
      }
    }
    const { rankOf, resultOf, unitSid } = tables;
    const sid = this.#sid;
    const length = this.#length;
    const prev = this.#prev;
    const next = this.#next;
    for (let i = 0; i < n; i++) {
      sid[i] = unitSid[units[i]!]!;
      length[i] = 1;
      prev[i] = i - 1;
      next[i] = i + 1;
    }
    next[n - 1] = -1;
    const queue = this.#queue;
    queue.clear();
    const tryPair = (left: number, right: number) => {
      if (left < 0 || right < 0) return;
      const l = sid[left]!;
      const r = sid[right]!;
      if (l < 0 || r < 0) return;
      const rank = rankOf.get(l, r);
      if (rank >= 0) queue.push(rank, left, right, length[left]! + length[right]!);
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
      sid[left] = resultOf[queue.key]!;
      const after = next[right]!;
      next[left] = after;
      if (after >= 0) prev[after] = left;
      tryPair(prev[left]!, left);
      tryPair(left, after);
    }
    const nVocab = this.#vocab.tokens.length;
    const ids: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) {
      const s = sid[i]!;
      if (s >= 0 && s < nVocab) ids.push(s);
      else {
        const text = s >= nVocab ? tables.extraTexts[s - nVocab]! : String.fromCharCode(units[i]!);
        this.#pushBytes(text, ids);
      }
    }
    return ids;
  }

  /**
   * A final symbol that is no token: the reference looks up each byte of its UTF-8 text as a
   * one-byte token and throws when one is missing (only ASCII-mapped symbols can succeed).
   */
  #pushBytes(piece: string, ids: number[]): void {
    const tokenToId = this.#vocab.tokenToId;
    for (const ch of piece) {
      const byteId = ch.charCodeAt(0) < 0x80 ? tokenToId.get(ch) : undefined;
      if (byteId === undefined) {
        const bytes = [...piece].map((c) => {
          const b = c.charCodeAt(0) < UNICODE_TO_BYTE.length
            ? UNICODE_TO_BYTE[c.charCodeAt(0)]!
            : -1;
          return b < 0 ? JSON.stringify(c) : "0x" + b.toString(16).toUpperCase().padStart(2, "0");
        });
        throw new TokenizerError(
          `Cannot tokenize the byte sequence ${
            bytes.join(" ")
          }: the vocabulary has no token for it`,
        );
      }
      ids.push(byteId);
    }
  }
}
