/**
 * A binary min-heap of merge candidates for the SPM and BPE tokenizers, kept in growable typed
 * arrays so encoding a megabyte allocates a handful of buffers, not millions of objects.
 * Order: smaller `key` first, ties → smaller `left` symbol index first. SPM pushes `−score`,
 * BPE pushes the merge rank.
 *
 * @module
 */

/** Priority queue of `(key, left, right, length)` merge candidates. */
export class MergeQueue {
  #key: Float64Array;
  #left: Int32Array;
  #right: Int32Array;
  #length: Int32Array;
  #n = 0;
  /** Fields of the entry returned by the last {@link MergeQueue.pop}. */
  key = 0;
  left = 0;
  right = 0;
  length = 0;

  constructor(capacity = 64) {
    this.#key = new Float64Array(capacity);
    this.#left = new Int32Array(capacity);
    this.#right = new Int32Array(capacity);
    this.#length = new Int32Array(capacity);
  }

  /** Number of candidates the buffers hold before growing. */
  get capacity(): number {
    return this.#key.length;
  }

  /** Number of queued candidates. */
  get size(): number {
    return this.#n;
  }

  #grow(): void {
    const cap = this.#key.length * 2;
    const key = new Float64Array(cap);
    key.set(this.#key);
    this.#key = key;
    const left = new Int32Array(cap);
    left.set(this.#left);
    this.#left = left;
    const right = new Int32Array(cap);
    right.set(this.#right);
    this.#right = right;
    const length = new Int32Array(cap);
    length.set(this.#length);
    this.#length = length;
  }

  /** Adds a candidate: merge symbol `right` into `left`, total text length `length`. */
  push(key: number, left: number, right: number, length: number): void {
    if (this.#n === this.#key.length) this.#grow();
    const k = this.#key;
    const l = this.#left;
    const r = this.#right;
    const n = this.#length;
    let i = this.#n++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const pk = k[parent]!;
      if (pk < key || (pk === key && l[parent]! <= left)) break;
      k[i] = pk;
      l[i] = l[parent]!;
      r[i] = r[parent]!;
      n[i] = n[parent]!;
      i = parent;
    }
    k[i] = key;
    l[i] = left;
    r[i] = right;
    n[i] = length;
  }

  /** Removes the best candidate into `this.key/left/right/length`; false when empty. */
  pop(): boolean {
    if (this.#n === 0) return false;
    const k = this.#key;
    const l = this.#left;
    const r = this.#right;
    const n = this.#length;
    this.key = k[0]!;
    this.left = l[0]!;
    this.right = r[0]!;
    this.length = n[0]!;
    const last = --this.#n;
    if (last === 0) return true;
    const key = k[last]!;
    const left = l[last]!;
    const right = r[last]!;
    const length = n[last]!;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= last) break;
      const c2 = c + 1;
      if (c2 < last && (k[c2]! < k[c]! || (k[c2] === k[c] && l[c2]! < l[c]!))) c = c2;
      const ck = k[c]!;
      if (key < ck || (key === ck && left <= l[c]!)) break;
      k[i] = ck;
      l[i] = l[c]!;
      r[i] = r[c]!;
      n[i] = n[c]!;
      i = c;
    }
    k[i] = key;
    l[i] = left;
    r[i] = right;
    n[i] = length;
    return true;
  }

  /** Empties the queue, keeping its buffers. */
  clear(): void {
    this.#n = 0;
  }
}
