/**
 * A Hugging Face model directory's weights as one ordered list of lazy tensors, whatever the
 * storage: `model.safetensors`, sharded `model-0000N-of-0000M.safetensors` (with or without
 * `model.safetensors.index.json`), `pytorch_model.bin` or its shards. Order is PowerInfer's
 * converter order: shards in name order, tensors in each file's own order.
 *
 * @module
 */

import { join } from "node:path";
import { CheckpointFormatError, ConvertError } from "../errors.ts";
import { FileSource } from "../torch/source.ts";
import { openTorchStateDict, type TorchDType, type TorchTensor } from "../torch/torch.ts";
import { parseSafetensorsIndex, SafetensorsFile } from "./safetensors.ts";

/** A tensor whose bytes are read only by `load()`. */
export interface LazyTensor {
  readonly name: string;
  readonly dtype: TorchDType;
  readonly shape: number[];
  load(): TorchTensor;
}

/** All tensors of a checkpoint, in order; `close()` releases the files. */
export interface Checkpoint extends Disposable {
  readonly files: string[];
  readonly tensors: Map<string, LazyTensor>;
  close(): void;
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function listDir(dir: string): string[] {
  try {
    // Follow symlinks: the Hugging Face cache links snapshot files to blobs.
    return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => exists(join(dir, n)))
      .sort();
  } catch (cause) {
    throw new ConvertError(`Cannot read model directory ${dir}`, { cause });
  }
}

/** Which weight files a directory holds, in load order. */
export function findWeightFiles(dir: string): { kind: "safetensors" | "torch"; files: string[] } {
  const names = listDir(dir);
  const st = names.filter((n) => /^model-\d+-of-\d+\.safetensors$/.test(n));
  if (exists(join(dir, "model.safetensors.index.json"))) {
    const { files } = parseSafetensorsIndex(
      Deno.readTextFileSync(join(dir, "model.safetensors.index.json")),
    );
    return { kind: "safetensors", files: [...files].sort() };
  }
  if (st.length > 0) return { kind: "safetensors", files: st };
  if (names.includes("model.safetensors")) {
    return { kind: "safetensors", files: ["model.safetensors"] };
  }
  const pt = names.filter((n) => /^pytorch_model-\d+-of-\d+\.bin$/.test(n));
  if (exists(join(dir, "pytorch_model.bin.index.json"))) {
    const { files } = parseSafetensorsIndex(
      Deno.readTextFileSync(join(dir, "pytorch_model.bin.index.json")),
    );
    return { kind: "torch", files: [...files].sort() };
  }
  if (pt.length > 0) return { kind: "torch", files: pt };
  if (names.includes("pytorch_model.bin")) return { kind: "torch", files: ["pytorch_model.bin"] };
  throw new ConvertError(
    `No weights in ${dir}: expected model.safetensors, model-*-of-*.safetensors, ` +
      `pytorch_model.bin or pytorch_model-*-of-*.bin`,
  );
}

/**
 * Opens every weight file of a model directory (headers only).
 *
 * @param dir The Hugging Face model directory.
 * @returns Ordered lazy tensors.
 * @throws {ConvertError} If no weights are found or a tensor name repeats across shards.
 * @throws {CheckpointFormatError} If a weight file is corrupt.
 */
export function openCheckpoint(dir: string): Checkpoint {
  const { kind, files } = findWeightFiles(dir);
  const closers: (() => void)[] = [];
  const tensors = new Map<string, LazyTensor>();
  const closeAll = () => {
    for (const c of closers.splice(0)) c();
  };
  try {
    for (const file of files) {
      const path = join(dir, file);
      if (!exists(path)) throw new ConvertError(`Weight shard ${path} is missing`);
      let refs: Iterable<[string, LazyTensor]>;
      if (kind === "safetensors") {
        const st = SafetensorsFile.open(path);
        closers.push(() => st.close());
        refs = st.tensors;
      } else {
        const src = new FileSource(path);
        closers.push(() => src.close());
        const sd = openTorchStateDict(src);
        refs = [...sd].map(([name, ref]) => [name, {
          name,
          dtype: ref.dtype,
          shape: ref.shape,
          load: () => ref.load(),
        }]);
      }
      for (const [name, ref] of refs) {
        if (tensors.has(name)) {
          throw new CheckpointFormatError(`Tensor "${name}" appears in two weight files`);
        }
        tensors.set(name, ref);
      }
    }
  } catch (e) {
    closeAll();
    throw e;
  }
  return {
    files: files.map((f) => join(dir, f)),
    tensors,
    close: closeAll,
    [Symbol.dispose]: closeAll,
  };
}
