/**
 * Output files written whole or not at all: the path is checked before any work starts (so a
 * long quantization does not fail at its last step), bytes go to a temporary file beside the
 * destination, and a rename puts it in place. One home for this so every writer (GGUF, GPU
 * index, profiler output) fails the same clear way.
 *
 * @module
 */

import { dirname } from "node:path";
import { FileWriteError, MappedFileError } from "../errors.ts";

/**
 * Says in words why a file system call on `path` failed.
 *
 * @param error What `Deno.*` threw.
 * @returns A lower-case reason such as `no such file or directory`.
 */
export function fsErrorReason(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file or directory";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory";
  if (error instanceof Deno.errors.AlreadyExists) return "it already exists";
  if (error instanceof Deno.errors.NotADirectory) return "a parent is not a directory";
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/ \(os error \d+\).*$/s, "").toLowerCase();
}

/**
 * Checks that `path` names a regular file that can be opened for reading.
 *
 * @param path The input file.
 * @param what What the file is, for the message (`input`, `model`, `text`).
 * @throws {MappedFileError} If it is missing, a directory or unreadable.
 *
 * @example A directory is not an input file
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { checkInputFile } from "./output_file.ts";
 * throws(() => checkInputFile(Deno.cwd(), "model"), /is a directory/);
 * ```
 */
export function checkInputFile(path: string, what = "file"): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    throw new MappedFileError(`Cannot read ${what} "${path}": ${fsErrorReason(error)}`, {
      cause: error,
    });
  }
  if (info.isDirectory) {
    throw new MappedFileError(`Cannot read ${what} "${path}": it is a directory, expected a file`);
  }
}

/**
 * Checks, before any work, that a file can be created at `path`: its directory exists and
 * `path` is not a directory.
 *
 * @param path The destination file.
 * @throws {FileWriteError} Saying what is in the way and how to fix it.
 *
 * @example A missing directory is reported before anything is written
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { checkOutputPath } from "./output_file.ts";
 * throws(() => checkOutputPath("/no/such/dir/out.gguf"), /directory "\/no\/such\/dir" does not exist/);
 * ```
 */
export function checkOutputPath(path: string): void {
  const dir = dirname(path);
  let dirInfo: Deno.FileInfo;
  try {
    dirInfo = Deno.statSync(dir);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? `directory "${dir}" does not exist (create it first)`
      : `cannot reach directory "${dir}": ${fsErrorReason(error)}`;
    throw new FileWriteError(`Cannot write "${path}": ${reason}`, { cause: error });
  }
  if (!dirInfo.isDirectory) {
    throw new FileWriteError(`Cannot write "${path}": "${dir}" is not a directory`);
  }
  let info: Deno.FileInfo | undefined;
  try {
    info = Deno.statSync(path);
  } catch {
    // Not there yet: the usual case.
  }
  if (info?.isDirectory) {
    throw new FileWriteError(
      `Cannot write "${path}": it is a directory (give a file path inside it)`,
    );
  }
}

/**
 * Checks, before any work, that directory `dir` exists or can be created: it is a directory,
 * or the nearest part of it that exists is one, and entries can be made there (probed with a
 * temporary file that is removed at once; nothing else is created).
 *
 * @param dir The output directory.
 * @throws {FileWriteError} If a file stands where a directory must be, or it is not writable.
 *
 * @example A file in the way
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { checkOutputDir } from "./output_file.ts";
 * const file = Deno.makeTempFileSync();
 * throws(() => checkOutputDir(`${file}/sub`), /is a file, not a directory/);
 * Deno.removeSync(file);
 * ```
 */
export function checkOutputDir(dir: string): void {
  for (let at = dir;; at = dirname(at)) {
    let info: Deno.FileInfo | undefined;
    try {
      info = Deno.statSync(at);
    } catch (error) {
      // NotADirectory: a file further up; the walk finds it.
      if (!(error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory)) {
        throw new FileWriteError(
          `Cannot create output directory "${dir}": ${fsErrorReason(error)} at "${at}"`,
          { cause: error },
        );
      }
    }
    if (info) {
      if (info.isDirectory) {
        // Can we create entries there? (A long run should not learn it at its end.)
        try {
          Deno.removeSync(Deno.makeTempFileSync({ dir: at, prefix: ".pi-probe-" }));
        } catch (error) {
          throw new FileWriteError(
            `Cannot create output directory "${dir}": ${fsErrorReason(error)} in "${at}"`,
            { cause: error },
          );
        }
        return;
      }
      throw new FileWriteError(
        `Cannot create output directory "${dir}": "${at}" is a file, not a directory (give a directory)`,
      );
    }
    if (dirname(at) === at) return;
  }
}

/**
 * A fresh temporary path beside `path` (same directory, so the final rename stays atomic).
 *
 * @param path The destination file.
 * @returns `<path>.tmp-<pid>-<random>`.
 */
export function tempPathBeside(path: string): string {
  return `${path}.tmp-${Deno.pid}-${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * Wraps a failure of a file system call that creates, writes or renames an output file (call it
 * around those calls only, so errors of the data producers pass through unchanged) into a FileWriteError that names
 * the destination (not the temporary file) and says nothing was written.
 *
 * @param path The destination file.
 * @param error What was thrown.
 * @returns The error to throw (`error` itself when it already is a FileWriteError).
 *
 * @example The message names the destination
 * ```ts
 * import { match } from "node:assert/strict";
 * import { fileWriteError } from "./output_file.ts";
 * const error = fileWriteError("/x/out.gguf", new Deno.errors.PermissionDenied("EACCES"));
 * match(error.message, /^Cannot write "\/x\/out.gguf": permission denied; no output written$/);
 * ```
 */
export function fileWriteError(path: string, error: unknown): Error {
  if (error instanceof FileWriteError) return error;
  return new FileWriteError(
    `Cannot write "${path}": ${fsErrorReason(error)}; no output written`,
    { cause: error },
  );
}

/**
 * Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees half a
 * file and a failure leaves nothing behind.
 *
 * @param path The destination file.
 * @param bytes The whole content.
 * @throws {FileWriteError} If the directory is missing, `path` is a directory, or a write fails.
 *
 * @example Write a small file
 * ```ts
 * import { deepStrictEqual } from "node:assert/strict";
 * import { writeFileAtomicSync } from "./output_file.ts";
 * const dir = Deno.makeTempDirSync();
 * writeFileAtomicSync(`${dir}/a.bin`, new Uint8Array([1, 2]));
 * deepStrictEqual([...Deno.readFileSync(`${dir}/a.bin`)], [1, 2]);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function writeFileAtomicSync(path: string, bytes: Uint8Array): void {
  checkOutputPath(path);
  const tmp = tempPathBeside(path);
  try {
    Deno.writeFileSync(tmp, bytes);
    Deno.renameSync(tmp, path);
  } catch (error) {
    try {
      Deno.removeSync(tmp);
    } catch { /* never created or already gone */ }
    throw fileWriteError(path, error);
  }
}
