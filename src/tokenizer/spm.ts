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
import { SPM_SPACE, type Vocab } from "./vocab.ts";

const utf8 = new TextEncoder();

/** Id of byte token `<0xNN>` for each byte; −1 where the vocabulary lacks it. */
export function spmByteIds(vocab: Vocab): Int32Array {
  const ids = new Int32Array(256);
  for (let b = 0; b < 256; b++) {
    const name = `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
    ids[b] = vocab.tokenToId.get(name) ?? -1;
  }
  return ids;
}

/** Reusable state of one SPM tokenizer (symbol list buffers and the queue). */
export class SpmEncoder {
  readonly #vocab: Vocab;
  readonly #byteIds: Int32Array;
  readonly #queue = new MergeQueue(1024);
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
    const tokenToId = this.#vocab.tokenToId;
    const scores = this.#vocab.scores;
    this.#ensure(text.length);
    const start = this.#start;
    const length = this.#length;
    const prev = this.#prev;
    const next = this.#next;

    // One symbol per code point; the list is doubly linked by index, -1 at both ends.
    let n = 0;
    for (let i = 0; i < text.length; n++) {
      const c = text.charCodeAt(i);
      const w = c >= 0xd800 && c <= 0xdbff && i + 1 < text.length ? 2 : 1;
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
      const len = length[left]! + length[right]!;
      const s = start[left]!;
      const id = tokenToId.get(text.slice(s, s + len));
      if (id !== undefined) queue.push(-scores[id]!, left, right, len);
    };
    for (let i = 1; i < n; i++) tryPair(i - 1, i);

    while (queue.pop()) {
      const left = queue.left;
      const right = queue.right;
      const ll = length[left]!;
      const rl = length[right]!;
      // Stale: one side was merged away or has grown since the candidate was queued.
      if (ll === 0 || rl === 0 || ll + rl !== queue.length) continue;
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
      const s = start[i]!;
      const piece = text.slice(s, s + length[i]!);
      const id = tokenToId.get(piece);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
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
