/**
 * Reusable activation buffers for the forward pass: one Float32Array per name, grown when a
 * bigger batch arrives, so decoding one token at a time allocates nothing.
 *
 * @module
 */

/** Named f32 work buffers. */
export class Scratch {
  #buffers = new Map<string, Float32Array>();

  /** A buffer of exactly `length` elements (contents unspecified). */
  get(name: string, length: number): Float32Array {
    let b = this.#buffers.get(name);
    if (!b || b.length < length) {
      b = new Float32Array(length);
      this.#buffers.set(name, b);
    }
    return b.subarray(0, length);
  }

  /** Bytes currently held. */
  get byteLength(): number {
    let n = 0;
    for (const b of this.#buffers.values()) n += b.byteLength;
    return n;
  }

  /** Drops every buffer. */
  clear(): void {
    this.#buffers.clear();
  }
}
