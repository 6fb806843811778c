/**
 * The KV cache of one sequence (spec model.md §1): per layer K `[nCtx, nEmbdGqa]` and V
 * transposed `[nEmbdGqa, nCtx]`, fp16 by default (f32 on request), plus the position of each
 * cell. Cells are filled in order from 0 and stay compact: a context shift drops a range of
 * cells and moves the later ones down (see Model).
 *
 * @module
 */

import { GenerationError } from "../errors.ts";
import type { KvLayer, KvType } from "../backend/backend.ts";

/** Cells attended at least (ggml pads n_kv to 32). */
const MIN_ATTENDED_CELLS = 32;

/** `1.5 GiB`, `12.0 MiB`. */
function formatBytes(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${n.toFixed(1)} ${units[i]}`;
}

/** A single-sequence KV cache. */
export class KvCache {
  readonly type: KvType;
  readonly nCtx: number;
  readonly nLayer: number;
  readonly nEmbdGqa: number;
  /** One entry per layer, views of two shared buffers. */
  readonly layers: readonly KvLayer[];
  /** Position held by each cell, −1 when empty. */
  readonly cellPositions: Int32Array;
  #used = 0;

  constructor(type: KvType, nCtx: number, nLayer: number, nEmbdGqa: number) {
    if (!Number.isInteger(nCtx) || nCtx <= 0) {
      throw new RangeError(`Context size ${nCtx} must be > 0`);
    }
    this.type = type;
    this.nCtx = nCtx;
    this.nLayer = nLayer;
    this.nEmbdGqa = nEmbdGqa;
    const perLayer = nCtx * nEmbdGqa;
    const make = (n: number) => type === "f16" ? new Uint16Array(n) : new Float32Array(n);
    let k: Uint16Array | Float32Array, v: Uint16Array | Float32Array;
    try {
      k = make(perLayer * nLayer);
      v = make(perLayer * nLayer);
    } catch (cause) {
      const bytes = 2 * nLayer * perLayer * (type === "f16" ? 2 : 4);
      throw new RangeError(
        `Cannot allocate the ${type} KV cache for a context of ${nCtx} tokens: it needs ${
          formatBytes(bytes)
        }: use a smaller context size`,
        { cause },
      );
    }
    this.layers = Array.from({ length: nLayer }, (_, l) => ({
      type,
      nCtx,
      nEmbdGqa,
      k: k.subarray(l * perLayer, (l + 1) * perLayer),
      v: v.subarray(l * perLayer, (l + 1) * perLayer),
    }));
    this.cellPositions = new Int32Array(nCtx).fill(-1);
  }

  /** Bytes held by K and V together. */
  get byteLength(): number {
    return 2 * this.nLayer * this.nCtx * this.nEmbdGqa * (this.type === "f16" ? 2 : 4);
  }

  /** Cells in use (= the next position for a sequence that started at 0). */
  get used(): number {
    return this.#used;
  }

  /** Cells free for new tokens. */
  get free(): number {
    return this.nCtx - this.#used;
  }

  /**
   * Reserves cells for `positions` (consecutive, after the used ones).
   *
   * @returns The slot of each token and the number of cells to attend.
   * @throws {GenerationError} If they do not fit in the context.
   */
  reserve(positions: Int32Array): { slots: Int32Array; nKv: number } {
    const n = positions.length;
    if (this.#used + n > this.nCtx) {
      throw new GenerationError(
        `Context is full: ${this.#used} of ${this.nCtx} cells used, ${n} more needed (raise nCtx / -c)`,
      );
    }
    const slots = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      slots[i] = this.#used + i;
      this.cellPositions[this.#used + i] = positions[i]!;
    }
    this.#used += n;
    const nKv = Math.min(this.nCtx, Math.max(MIN_ATTENDED_CELLS, this.#used));
    return { slots, nKv };
  }

  /** Forgets the last `n` cells (undo of a failed or aborted decode). */
  release(n: number): void {
    const m = Math.min(n, this.#used);
    this.cellPositions.fill(-1, this.#used - m, this.#used);
    this.#used -= m;
  }

  /**
   * Drops cells [start, start + n) and moves the later cells down by n (K rows and V columns),
   * their positions decreasing by n. The moved keys still carry their old rotation: the caller
   * re-rotates them by −n (context shift, cli.md §1).
   *
   * @returns The range of moved cells `[start, start + nMoved)`.
   */
  discard(start: number, n: number): { start: number; nMoved: number } {
    if (start < 0 || n < 0 || start + n > this.#used) {
      throw new RangeError(`Cannot discard cells [${start}, ${start + n}) of ${this.#used}`);
    }
    const nMoved = this.#used - start - n;
    const w = this.nEmbdGqa;
    for (const layer of this.layers) {
      layer.k.copyWithin(start * w, (start + n) * w, this.#used * w);
      for (let i = 0; i < w; i++) {
        const row = i * this.nCtx;
        layer.v.copyWithin(row + start, row + start + n, row + this.#used);
      }
    }
    for (let c = start; c < start + nMoved; c++) {
      this.cellPositions[c] = this.cellPositions[c + n]! - n;
    }
    this.cellPositions.fill(-1, start + nMoved, this.#used);
    this.#used -= n;
    return { start, nMoved };
  }

  /** Empties the cache (contents stay until overwritten; positions are cleared). */
  clear(): void {
    this.cellPositions.fill(-1);
    this.#used = 0;
  }
}
