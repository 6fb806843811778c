/**
 * SentencePiece-style tokenizer of LLaMA vocabularies (spec/tokenizer.md §3): one symbol per
 * character, greedy merges of the adjacent pair whose joined text is the highest-scoring
 * vocabulary token (priority queue, O(n log n)), byte fallback `<0xNN>` for characters the
 * vocabulary lacks.
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";
import { MergeQueue } from "./merge_queue.ts";
import { PairTable } from "./pair_table.ts";
import { SPM_SPACE, type Vocab } from "./vocab.ts";

const utf8 = new TextEncoder();
/** Buffers above this many entries are dropped after the call that needed them. */
const BIG = 1 << 16;
/** Slots of the chunk cache (a power of two) and the longest cached chunk in UTF-16 units. */
const CACHE_SLOTS = 4096;
const CACHE_CHUNK_MAX = 24;

/** Id of byte token `<0xNN>` for each byte; −1 where the vocabulary lacks it. */
export function spmByteIds(vocab: Vocab): Int32Array {
  const ids = new Int32Array(256);
  for (let b = 0; b < 256; b++) {
    const name = `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
    ids[b] = vocab.tokenToId.get(name) ?? -1;
  }
  return ids;
}

/**
 * Symbol ids ("sids"): a symbol is always a vocabulary token or a single character, so it gets
 * the token id, or for a character that is no token but occurs inside one, an id ≥ nVocab.
 * Every way to write a token as two such symbols is one entry of `mergeOf`.
 */
interface SpmTables {
  /** (left sid, right sid) → id of the token spelled by their concatenation. */
  mergeOf: PairTable;
  /** Code points that are adjacent somewhere inside a token (value 1): nowhere else can a
   * merged symbol span, so the text is cut between other neighbours. */
  adjacent: PairTable;
  /** Sid of each BMP code point, −1 when it takes part in no token. */
  bmpSid: Int32Array;
  /** Sid of astral code points that take part in some token. */
  astralSid: Map<number, number>;
}

function codePoints(text: string): number[] {
  const cps: number[] = [];
  for (let i = 0; i < text.length;) {
    const c = text.codePointAt(i)!;
    cps.push(c);
    i += c > 0xffff ? 2 : 1;
  }
  return cps;
}

function buildSpmTables(vocab: Vocab): SpmTables {
  const nVocab = vocab.tokens.length;
  const bmpSid = new Int32Array(0x10000).fill(-1);
  const astralSid = new Map<number, number>();
  const sidOfCp = (c: number) => (c < 0x10000 ? bmpSid[c]! : astralSid.get(c) ?? -1);
  const setSid = (c: number, sid: number) => {
    if (c < 0x10000) bmpSid[c] = sid;
    else astralSid.set(c, sid);
  };
  const spelled = vocab.tokens.map(codePoints);
  // Single-character tokens first, then characters that only occur inside longer tokens.
  spelled.forEach((cps, id) => {
    if (cps.length === 1) setSid(cps[0]!, id);
  });
  let nextSid = nVocab;
  let nPairs = 0;
  for (const cps of spelled) {
    nPairs += cps.length - 1;
    for (const c of cps) if (sidOfCp(c) < 0) setSid(c, nextSid++);
  }
  const mergeOf = new PairTable(nPairs);
  const adjacent = new PairTable(nPairs);
  const { tokens, tokenToId } = vocab;
  spelled.forEach((cps, id) => {
    if (cps.length < 2) return;
    const text = tokens[id]!;
    let cut = 0; // UTF-16 offset of the split
    for (let k = 1; k < cps.length; k++) {
      cut += cps[k - 1]! > 0xffff ? 2 : 1;
      adjacent.setIfAbsent(cps[k - 1]!, cps[k]!, 1);
      const left = k === 1 ? sidOfCp(cps[0]!) : tokenToId.get(text.slice(0, cut)) ?? -1;
      const right = k === cps.length - 1 ? sidOfCp(cps[k]!) : tokenToId.get(text.slice(cut)) ?? -1;
      if (left >= 0 && right >= 0) mergeOf.setIfAbsent(left, right, id);
    }
  });
  return { mergeOf, adjacent, bmpSid, astralSid };
}

/**
 * Reusable state of one SPM tokenizer (tables, symbol buffers, the queue, a chunk cache).
 *
 * Speed-up that keeps the result exact: a merged symbol is always a vocabulary token, so two
 * adjacent characters `a b` that appear next to each other in no token can never end up in one
 * symbol. The text is cut at every such place and the pieces are merged independently (and
 * cached): the merges inside a piece happen in the same relative order as in one global queue.
 */
export class SpmEncoder {
  readonly #vocab: Vocab;
  readonly #byteIds: Int32Array;
  #queue = new MergeQueue(1024);
  /** Direct-mapped chunk cache: UTF-16 units per slot (CACHE_CHUNK_MAX), length (−1 = empty). */
  readonly #cacheUnits = new Uint16Array(CACHE_SLOTS * CACHE_CHUNK_MAX);
  readonly #cacheLengths = new Int32Array(CACHE_SLOTS).fill(-1);
  readonly #cacheIds: (readonly number[] | undefined)[] = new Array(CACHE_SLOTS);
  #tables?: SpmTables;
  #sid = new Int32Array(0);
  #start = new Int32Array(0);
  #length = new Int32Array(0);
  #prev = new Int32Array(0);
  #next = new Int32Array(0);

  constructor(vocab: Vocab) {
    this.#vocab = vocab;
    this.#byteIds = spmByteIds(vocab);
  }

  #ensure(n: number): void {
    if (this.#start.length >= n) return;
    const cap = Math.max(n, this.#start.length * 2, 256);
    this.#sid = new Int32Array(cap);
    this.#start = new Int32Array(cap);
    this.#length = new Int32Array(cap);
    this.#prev = new Int32Array(cap);
    this.#next = new Int32Array(cap);
  }

  /**
   * Tokenizes one text fragment, appending ids to `out`.
   *
   * @param fragment Well-formed text (no lone surrogates).
   * @param dummyPrefix Whether to prepend one space (the reference does unless special=true).
   * @param out Receives the ids.
   * @throws {TokenizerError} If a character needs a byte token the vocabulary lacks.
   */
  encode(fragment: string, dummyPrefix: boolean, out: number[]): void {
    if (dummyPrefix) fragment = " " + fragment;
    const text = fragment.replaceAll(" ", SPM_SPACE);
    if (text.length === 0) return;
    const adjacent = (this.#tables ??= buildSpmTables(this.#vocab)).adjacent;
    let chunkStart = 0;
    let prev = text.codePointAt(0)!;
    for (let i = prev > 0xffff ? 2 : 1; i < text.length;) {
      const c = text.codePointAt(i)!;
      if (adjacent.get(prev, c) < 0) {
        this.#encodeChunk(text, chunkStart, i, out);
        chunkStart = i;
      }
      prev = c;
      i += c > 0xffff ? 2 : 1;
    }
    this.#encodeChunk(text, chunkStart, text.length, out);
    // Do not keep megabytes of buffers alive after one huge chunk.
    if (this.#start.length > BIG) {
      this.#start = new Int32Array(0);
      this.#sid = new Int32Array(0);
      this.#length = new Int32Array(0);
      this.#prev = new Int32Array(0);
      this.#next = new Int32Array(0);
    }
    if (this.#queue.capacity > BIG) this.#queue = new MergeQueue(1024);
  }

  /** Chunk `text[from, to)`: from the cache (keyed by a hash of its units) or merged. */
  #encodeChunk(text: string, from: number, to: number, out: number[]): void {
    const n = to - from;
    let ids: readonly number[] | undefined;
    let slot = -1;
    if (n <= CACHE_CHUNK_MAX) {
      let h = 0x811c9dc5;
      for (let i = from; i < to; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
      slot = (h ^ (h >>> 16)) & (CACHE_SLOTS - 1);
      const units = this.#cacheUnits;
      const at = slot * CACHE_CHUNK_MAX;
      if (this.#cacheLengths[slot] === n) {
        let same = true;
        for (let i = 0; i < n && same; i++) same = units[at + i] === text.charCodeAt(from + i);
        if (same) ids = this.#cacheIds[slot];
      }
    }
    if (!ids) {
      const fresh: number[] = [];
      this.#merge(text.slice(from, to), fresh);
      ids = fresh;
      if (slot >= 0) {
        // Stored only after a successful merge, so a throwing chunk leaves no stale slot.
        const at = slot * CACHE_CHUNK_MAX;
        for (let i = 0; i < n; i++) this.#cacheUnits[at + i] = text.charCodeAt(from + i);
        this.#cacheLengths[slot] = n;
        this.#cacheIds[slot] = ids;
      }
    }
    for (let i = 0; i < ids.length; i++) out.push(ids[i]!);
  }

  /** The score-driven merge of spec §3 over one (escaped) chunk. */
  #merge(text: string, out: number[]): void {
    const { mergeOf, bmpSid, astralSid } = this.#tables!;
    const scores = this.#vocab.scores;
    const nVocab = this.#vocab.tokens.length;
    this.#ensure(text.length);
    const sid = this.#sid;
    const start = this.#start;
    const length = this.#length;
    const prev = this.#prev;
    const next = this.#next;

    // One symbol per code point; the list is doubly linked by index, -1 at both ends.
    let n = 0;
    for (let i = 0; i < text.length; n++) {
      const c = text.codePointAt(i)!;
      const w = c > 0xffff ? 2 : 1;
      sid[n] = c < 0x10000 ? bmpSid[c]! : astralSid.get(c) ?? -1;
      start[n] = i;
      length[n] = w;
      prev[n] = n - 1;
      next[n] = n + 1;
      i += w;
    }
    next[n - 1] = -1;

    const queue = this.#queue;
    queue.clear();
    const tryPair = (left: number, right: number) => {
      if (left < 0 || right < 0) return;
      const l = sid[left]!;
      const r = sid[right]!;
      if (l < 0 || r < 0) return;
      const id = mergeOf.get(l, r);
      if (id >= 0) queue.push(-scores[id]!, left, right, length[left]! + length[right]!);
    };
    for (let i = 1; i < n; i++) tryPair(i - 1, i);

    while (queue.pop()) {
      const left = queue.left;
      const right = queue.right;
      const ll = length[left]!;
      const rl = length[right]!;
      // Stale: one side was merged away or has grown since the candidate was queued.
      if (ll === 0 || rl === 0 || ll + rl !== queue.length) continue;
      sid[left] = mergeOf.get(sid[left]!, sid[right]!);
      length[left] = ll + rl;
      length[right] = 0;
      const after = next[right]!;
      next[left] = after;
      if (after >= 0) prev[after] = left;
      tryPair(prev[left]!, left);
      tryPair(left, after);
    }

    const byteIds = this.#byteIds;
    for (let i = 0; i >= 0; i = next[i]!) {
      const s = sid[i]!;
      if (s >= 0 && s < nVocab) {
        out.push(s);
        continue;
      }
      const piece = text.slice(start[i]!, start[i]! + length[i]!); // one character
      for (const b of utf8.encode(piece)) {
        const byteId = byteIds[b]!;
        if (byteId < 0) {
          throw new TokenizerError(
            `Cannot tokenize ${JSON.stringify(piece)}: the vocabulary has no byte token <0x${
              b.toString(16).toUpperCase().padStart(2, "0")
            }>`,
          );
        }
        out.push(byteId);
      }
    }
  }
}
