/**
 * An open-addressing hash map from a pair of non-negative int32 ids to an int32 value, in typed
 * arrays. The tokenizers probe it once per merge candidate; a `Map` keyed by `left * n + right`
 * would box keys above 2³¹ and allocate on every probe.
 *
 * @module
 */

/** Pair (left, right) → value; values are int32, `get` returns −1 when absent. */
export class PairTable {
  #left: Int32Array;
  #right: Int32Array;
  #value: Int32Array;
  #mask: number;
  #size = 0;

  /** @param expected Number of pairs to be inserted (sizes the table at ≤ 50% load). */
  constructor(expected: number) {
    let cap = 16;
    while (cap < expected * 2) cap *= 2;
    this.#left = new Int32Array(cap).fill(-1);
    this.#right = new Int32Array(cap);
    this.#value = new Int32Array(cap);
    this.#mask = cap - 1;
  }

  /** Number of stored pairs. */
  get size(): number {
    return this.#size;
  }

  #slot(left: number, right: number): number {
    let h = Math.imul(left, 0x9e3779b1) ^ Math.imul(right + 0x7f4a7c15, 0x85ebca6b);
    h ^= h >>> 15;
    return h & this.#mask;
  }

  /** Stores `value` for the pair unless it is present already (first insertion wins). */
  setIfAbsent(left: number, right: number, value: number): void {
    if (this.#size * 2 >= this.#left.length) this.#grow();
    const l = this.#left;
    const r = this.#right;
    for (let i = this.#slot(left, right);; i = (i + 1) & this.#mask) {
      if (l[i] === -1) {
        l[i] = left;
        r[i] = right;
        this.#value[i] = value;
        this.#size++;
        return;
      }
      if (l[i] === left && r[i] === right) return;
    }
  }

  /** The value of the pair, or −1. */
  get(left: number, right: number): number {
    const l = this.#left;
    const r = this.#right;
    for (let i = this.#slot(left, right);; i = (i + 1) & this.#mask) {
      const li = l[i]!;
      if (li === -1) return -1;
      if (li === left && r[i] === right) return this.#value[i]!;
    }
  }

  #grow(): void {
    const l = this.#left;
    const r = this.#right;
    const v = this.#value;
    const cap = l.length * 2;
    this.#left = new Int32Array(cap).fill(-1);
    this.#right = new Int32Array(cap);
    this.#value = new Int32Array(cap);
    this.#mask = cap - 1;
    this.#size = 0;
    for (let i = 0; i < l.length; i++) if (l[i] !== -1) this.setIfAbsent(l[i]!, r[i]!, v[i]!);
  }
}
