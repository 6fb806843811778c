/**
 * Read-only memory-mapped files (model weights) with zero-copy views.
 *
 * The mapping is C-owned memory (kernels/cpu/mmap.c): `close()` unmaps it and detaches the
 * ArrayBuffer behind every view handed out, so a view used after close reads as empty instead
 * of touching unmapped memory. A `FinalizationRegistry` unmaps a forgotten mapping once neither
 * the file object nor any view can be reached.
 *
 * @module
 */
import { MappedFileError } from "../src/errors.ts";
import { openNative } from "./library.ts";

interface Mapping {
  base: Deno.PointerValue;
  byteLength: number;
}

const unmapLater = new FinalizationRegistry<Mapping>((m) => {
  try {
    openNative().pi_mmap_close(m.base, BigInt(m.byteLength));
  } catch {
    // nothing left to report to at finalization time
  }
});

function lastError(): string {
  const p = openNative().pi_last_error();
  return p === null ? "" : Deno.UnsafePointerView.getCString(p);
}

/**
 * A read-only mapping of a whole file, with zero-copy views that die with the mapping.
 *
 * @example Read a file's first bytes without copying it
 * ```ts ignore
 * import { strictEqual } from "node:assert/strict";
 * import { MappedFile } from "./mapped_file.ts";
 * using file = MappedFile.open("assets/fortune-relu.q4.powerinfer.gguf");
 * strictEqual(new TextDecoder().decode(file.view(0, 4)), "PWRI");
 * ```
 */
export class MappedFile implements Disposable {
  /** The path the file was opened with. */
  readonly path: string;
  /** File size in bytes. */
  readonly byteLength: number;
  #mapping: Mapping | undefined;
  #buffer: ArrayBuffer | undefined;

  private constructor(path: string, mapping: Mapping, buffer: ArrayBuffer) {
    this.path = path;
    this.byteLength = mapping.byteLength;
    this.#mapping = mapping;
    this.#buffer = buffer;
  }

  /**
   * Maps `path` read-only (madvise WILLNEED). An empty file gives an empty mapping.
   *
   * @throws {MappedFileError} If the file cannot be opened or mapped (missing, a directory...).
   * @throws {NativeLibraryError} If the kernel library cannot be loaded.
   */
  static open(path: string): MappedFile {
    const native = openNative();
    const out = new BigUint64Array(2); // [base, len]
    const status = native.pi_mmap_open(
      new TextEncoder().encode(`${path}\0`),
      out.subarray(0, 1),
      out.subarray(1, 2),
    );
    if (status !== 0) throw new MappedFileError(lastError() || `Cannot map "${path}"`);
    const byteLength = Number(out[1]);
    const base = Deno.UnsafePointer.create(out[0]!);
    if (byteLength === 0 || base === null) {
      return new MappedFile(path, { base: null, byteLength: 0 }, new ArrayBuffer(0));
    }
    const buffer = Deno.UnsafePointerView.getArrayBuffer(base, byteLength);
    const file = new MappedFile(path, { base, byteLength }, buffer);
    unmapLater.register(buffer, { base, byteLength }, file);
    return file;
  }

  /** Whether `close()` has run. */
  get closed(): boolean {
    return this.#mapping === undefined;
  }

  /**
   * A zero-copy view of `byteLength` bytes from `offsetBytes` (default: to the end). Valid
   * until `close()`.
   *
   * @throws {MappedFileError} After `close()`.
   * @throws {RangeError} If the range is outside the file.
   */
  view(offsetBytes = 0, byteLength: number = this.byteLength - offsetBytes): Uint8Array {
    if (!this.#buffer) throw new MappedFileError(`Mapping of "${this.path}" is closed`);
    if (
      !Number.isInteger(offsetBytes) || !Number.isInteger(byteLength) || offsetBytes < 0 ||
      byteLength < 0 || offsetBytes + byteLength > this.byteLength
    ) {
      throw new RangeError(
        `View [${offsetBytes}, +${byteLength}) is outside "${this.path}" (${this.byteLength} bytes)`,
      );
    }
    return new Uint8Array(this.#buffer, offsetBytes, byteLength);
  }

  /** Unmaps the file; views handed out become empty (detached). Idempotent. */
  close(): void {
    const mapping = this.#mapping;
    if (!mapping) return;
    this.#mapping = undefined;
    const buffer = this.#buffer;
    this.#buffer = undefined;
    if (mapping.base === null) return;
    unmapLater.unregister(this);
    // detach first: views over the buffer now have length 0 instead of dangling
    buffer?.transfer(0);
    const native = openNative();
    const status = native.pi_mmap_close(mapping.base, BigInt(mapping.byteLength));
    if (status !== 0) throw new MappedFileError(lastError() || `Cannot unmap "${this.path}"`);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
