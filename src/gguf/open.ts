/**
 * Opening GGUF/PWRI files from disk through a read-only memory mapping (ffi/mapped_file.ts).
 *
 * Only the header pages are read while parsing; each `tensorData()` is a zero-copy view of the
 * mapping, so a multi-GB model costs no copies and its pages are faulted in only when a kernel
 * reads them.
 *
 * @module
 */

import { MappedFile } from "../../ffi/mapped_file.ts";
import { type GgufFile, parseGgufSource } from "./reader.ts";

/**
 * Maps a GGUF/PWRI file and parses its header; only the header region is read.
 *
 * @param path File to open.
 * @returns The parsed file; closing it (or `using`) unmaps the file, after which views handed
 * out by `tensorData()` are detached (empty) and `tensorData()` throws.
 * @throws {MappedFileError} If the file cannot be opened or mapped.
 * @throws {NativeLibraryError} If the kernel library cannot be loaded (`deno task build`).
 * @throws {GgufFormatError} If it is not a valid GGUF v2/v3 or PWRI file.
 *
 * @example Read a model's header
 * ```ts ignore
 * import { openGguf } from "./open.ts";
 * using file = openGguf("tiny.powerinfer.f16.gguf");
 * console.log(file.kind, file.getU32("llama.embedding_length"));
 * ```
 */
export function openGguf(path: string): GgufFile {
  const mapped = MappedFile.open(path);
  try {
    return parseGgufSource({
      byteLength: mapped.byteLength,
      view: (offsetBytes, byteLength) => mapped.view(offsetBytes, byteLength),
      close: () => mapped.close(),
    });
  } catch (error) {
    mapped.close();
    throw error;
  }
}
