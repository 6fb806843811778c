/**
 * Random-access byte sources: a checkpoint is read either from bytes already in memory (or a
 * mapping) or piece by piece from an open file, so a 10 GB shard never has to be read whole.
 *
 * @module
 */

import { CheckpointFormatError } from "../errors.ts";
import { checkInputFile } from "../gguf/output_file.ts";

/** Bytes that can be read at any offset. `read` may return a view (no copy) or a fresh array. */
export interface ByteSource {
  /** Total length in bytes. */
  readonly byteLength: number;
  /** `length` bytes at `offsetBytes`; throws CheckpointFormatError when out of range. */
  read(offsetBytes: number, length: number): Uint8Array;
}

function checkRange(what: string, offsetBytes: number, length: number, byteLength: number): void {
  if (
    !Number.isSafeInteger(offsetBytes) || !Number.isSafeInteger(length) || offsetBytes < 0 ||
    length < 0 || offsetBytes + length > byteLength
  ) {
    throw new CheckpointFormatError(
      `${what}: range [${offsetBytes}, ${offsetBytes + length}) is outside the ${byteLength} bytes`,
    );
  }
}

/**
 * A source over bytes in memory; reads are zero-copy views.
 *
 * @param bytes The whole file.
 * @returns A ByteSource whose `read` returns subarrays of `bytes`.
 * @throws {CheckpointFormatError} From `read`, when the range is outside the bytes.
 *
 * @example Reads are views; out-of-range reads throw
 * ```ts
 * import { deepStrictEqual, throws } from "node:assert/strict";
 * import { bytesSource } from "./source.ts";
 * const src = bytesSource(new Uint8Array([1, 2, 3, 4]));
 * deepStrictEqual([...src.read(1, 2)], [2, 3]);
 * throws(() => src.read(3, 2));
 * ```
 */
export function bytesSource(bytes: Uint8Array): ByteSource {
  return {
    byteLength: bytes.byteLength,
    read(offsetBytes, length) {
      checkRange("Read", offsetBytes, length, bytes.byteLength);
      return bytes.subarray(offsetBytes, offsetBytes + length);
    },
  };
}

/**
 * A source over an open file; every read copies the requested range from disk.
 *
 * @example Reading a range of a file
 * ```ts
 * import { deepStrictEqual } from "node:assert/strict";
 * import { FileSource } from "./source.ts";
 * const path = Deno.makeTempFileSync();
 * Deno.writeFileSync(path, new Uint8Array([9, 8, 7, 6]));
 * {
 *   using src = new FileSource(path);
 *   deepStrictEqual([...src.read(2, 2)], [7, 6]);
 * }
 * Deno.removeSync(path);
 * ```
 */
export class FileSource implements ByteSource, Disposable {
  #file: Deno.FsFile | undefined;
  readonly byteLength: number;
  readonly path: string;

  constructor(path: string) {
    this.path = path;
    checkInputFile(path);
    this.#file = Deno.openSync(path, { read: true });
    this.byteLength = this.#file.statSync().size;
  }

  read(offsetBytes: number, length: number): Uint8Array {
    const file = this.#file;
    if (!file) throw new CheckpointFormatError(`File ${this.path} is closed`);
    checkRange(`Read from ${this.path}`, offsetBytes, length, this.byteLength);
    const out = new Uint8Array(length);
    file.seekSync(offsetBytes, Deno.SeekMode.Start);
    let done = 0;
    while (done < length) {
      const n = file.readSync(out.subarray(done));
      if (n === null || n === 0) {
        throw new CheckpointFormatError(
          `File ${this.path} ended after ${offsetBytes + done} bytes: expected ${
            offsetBytes + length
          }`,
        );
      }
      done += n;
    }
    return out;
  }

  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
