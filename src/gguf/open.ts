/**
 * Opening GGUF/PWRI files from disk.
 *
 * TEMPORARY: until `ffi/mapped_file.ts` (H-foundation) lands, files are read with positioned
 * reads: the header through 1 MiB windows, each tensor copied on `tensorData`. The contract
 * (zero-copy views of a mapping) is restored when `openGguf` switches to `MappedFile`.
 *
 * @module
 */

import { MappedFileError } from "../errors.ts";
import { type GgufByteSource, type GgufFile, parseGgufSource } from "./reader.ts";

class FileReadSource implements GgufByteSource {
  readonly byteLength: number;
  #file: Deno.FsFile | undefined;

  constructor(readonly path: string) {
    try {
      this.#file = Deno.openSync(path, { read: true });
    } catch (cause) {
      throw new MappedFileError(`Cannot open ${path}`, { cause });
    }
    this.byteLength = this.#file.statSync().size;
  }

  view(offsetBytes: number, byteLength: number): Uint8Array {
    const file = this.#file;
    if (!file) throw new MappedFileError(`Cannot read ${this.path}: it was closed`);
    const out = new Uint8Array(byteLength);
    file.seekSync(offsetBytes, Deno.SeekMode.Start);
    let done = 0;
    while (done < byteLength) {
      const n = file.readSync(out.subarray(done));
      if (n === null) throw new MappedFileError(`Unexpected end of ${this.path}`);
      done += n;
    }
    return out;
  }

  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }
}

/**
 * Opens a GGUF/PWRI file and parses its header; only the header region is read.
 *
 * @param path File to open.
 * @returns The parsed file; close it (or `using`) to release the file.
 * @throws {MappedFileError} If the file cannot be opened.
 * @throws {GgufFormatError} If it is not a valid GGUF v2/v3 or PWRI file.
 */
export function openGguf(path: string): GgufFile {
  const source = new FileReadSource(path);
  try {
    return parseGgufSource(source);
  } catch (error) {
    source.close();
    throw error;
  }
}
