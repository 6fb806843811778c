/**
 * Activation statistics: per layer, per FFN neuron, how often the neuron fired (spec:
 * shared/spec/gpu-index.md §1). Two on-disk forms are read from an activation directory
 * (default `<model dir>/activation`):
 *
 * 1. PowerInfer's: `activation_<L>.pt`, one `torch.save`d 1-D tensor of length n_ff per layer
 *    (any real, integer or bool dtype). Files are matched to layers by the NUMBER in their name
 *    (PowerInfer sorts the names as text, which gives layer 2 the statistics of layer 10 when a
 *    model has more than 10 layers; we do not).
 * 2. Ours, written by `deno task profile`: `activation_counts.json`, UTF-8 JSON
 *    ```json
 *    { "format": "powerinfer-deno.activation", "version": 1,
 *      "tokens": 22351,                   // tokens profiled (optional, informative)
 *      "model": "fortune-relu.q4.powerinfer.gguf", // informative
 *      "threshold": 0,                    // predictor threshold used (informative)
 *      "layers": [[9830, 6390, ...], ...] // [n_layer][n_ff] non-negative counts
 *    }
 *    ```
 *    When a directory holds both, the JSON file wins (it is what our profiler wrote last).
 *
 * @module
 */

import { CheckpointFormatError, GpuIndexError, PowerInferError } from "../errors.ts";
import { readTorchTensor, type TorchTensor } from "../torch/torch.ts";
import { fp16ToF32 } from "../quant/f16.ts";

/** File name of our own statistics format. */
export const ACTIVATION_JSON = "activation_counts.json";

/** Value of the `format` field of {@link ACTIVATION_JSON}. */
export const ACTIVATION_JSON_FORMAT = "powerinfer-deno.activation";

/** Activation statistics of a whole model. */
export interface ActivationStats {
  /** `[nLayer][nFf]` activation counts. */
  readonly counts: Float64Array[];
  /** Tokens profiled, when known (our JSON format records it; `.pt` files do not). */
  readonly tokens?: number;
  /** Where the statistics came from (for messages). */
  readonly source: string;
}

/**
 * Turns a 1-D torch tensor of any dtype into counts.
 *
 * @param tensor A tensor from `readTorchTensor`.
 * @returns Its elements as float64.
 * @throws {CheckpointFormatError} If the tensor is not 1-D or its byte length does not match.
 *
 * @example An int32 tensor
 * ```ts
 * import { deepStrictEqual } from "node:assert/strict";
 * import { countsFromTorchTensor } from "./stats.ts";
 * const data = new Uint8Array(Int32Array.from([3, 0, 7]).buffer);
 * deepStrictEqual([...countsFromTorchTensor({ dtype: "int32", shape: [3], data })], [3, 0, 7]);
 * ```
 */
export function countsFromTorchTensor(tensor: TorchTensor): Float64Array {
  if (tensor.shape.length !== 1) {
    throw new CheckpointFormatError(
      `Activation tensor has shape [${tensor.shape.join(", ")}]: expected 1-D [n_ff]`,
    );
  }
  const n = tensor.shape[0]!;
  const bytesPer: Record<string, number> = {
    float64: 8,
    int64: 8,
    float32: 4,
    int32: 4,
    float16: 2,
    bfloat16: 2,
    int16: 2,
    int8: 1,
    uint8: 1,
    bool: 1,
  };
  const size = bytesPer[tensor.dtype];
  if (size === undefined) {
    throw new CheckpointFormatError(`Activation tensor has unsupported dtype ${tensor.dtype}`);
  }
  if (tensor.data.length !== n * size) {
    throw new CheckpointFormatError(
      `Activation tensor of ${n} ${tensor.dtype} has ${tensor.data.length} bytes: expected ${
        n * size
      }`,
    );
  }
  const view = new DataView(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    switch (tensor.dtype) {
      case "float64":
        out[i] = view.getFloat64(i * 8, true);
        break;
      case "int64":
        out[i] = Number(view.getBigInt64(i * 8, true));
        break;
      case "float32":
        out[i] = view.getFloat32(i * 4, true);
        break;
      case "int32":
        out[i] = view.getInt32(i * 4, true);
        break;
      case "float16":
        out[i] = fp16ToF32(view.getUint16(i * 2, true));
        break;
      case "bfloat16": {
        const f = new DataView(new ArrayBuffer(4));
        f.setUint32(0, view.getUint16(i * 2, true) << 16);
        out[i] = f.getFloat32(0);
        break;
      }
      case "int16":
        out[i] = view.getInt16(i * 2, true);
        break;
      case "int8":
        out[i] = view.getInt8(i);
        break;
      default: // uint8, bool
        out[i] = view.getUint8(i);
    }
  }
  return out;
}

/**
 * Reads one `activation_<L>.pt` file's bytes.
 *
 * @param bytes The `.pt` file (a torch zip archive holding one tensor).
 * @param name File name for messages.
 * @returns The counts.
 * @throws {CheckpointFormatError} If the bytes are not a torch file holding one 1-D tensor
 * (truncated or corrupted archives included).
 *
 * @example Garbage is a typed error
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { CheckpointFormatError } from "../errors.ts";
 * import { readActivationPt } from "./stats.ts";
 * throws(() => readActivationPt(new Uint8Array([1, 2, 3])), CheckpointFormatError);
 * ```
 */
export function readActivationPt(bytes: Uint8Array, name = "activation .pt file"): Float64Array {
  let tensor: TorchTensor;
  try {
    tensor = readTorchTensor(bytes);
  } catch (cause) {
    if (cause instanceof CheckpointFormatError) {
      throw new CheckpointFormatError(`Cannot read ${name}: ${cause.message}`, { cause });
    }
    if (cause instanceof PowerInferError) throw cause;
    // A reader bug on hostile input must still surface as a typed format error.
    throw new CheckpointFormatError(`Cannot read ${name}: ${String(cause)}`, { cause });
  }
  try {
    return countsFromTorchTensor(tensor);
  } catch (cause) {
    if (cause instanceof CheckpointFormatError) {
      throw new CheckpointFormatError(`Cannot read ${name}: ${cause.message}`, { cause });
    }
    throw cause;
  }
}

/**
 * Parses our JSON statistics format (see the module doc).
 *
 * @param text The JSON text.
 * @param name File name for messages.
 * @returns The statistics.
 * @throws {GpuIndexError} If the text is not valid statistics.
 *
 * @example
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { parseActivationJson } from "./stats.ts";
 * const s = parseActivationJson(
 *   '{"format":"powerinfer-deno.activation","version":1,"tokens":3,"layers":[[1,0,3]]}',
 * );
 * strictEqual(s.counts[0]![2], 3);
 * strictEqual(s.tokens, 3);
 * ```
 */
export function parseActivationJson(text: string, name = ACTIVATION_JSON): ActivationStats {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (cause) {
    throw new GpuIndexError(`${name} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  const o = obj as Record<string, unknown>;
  if (typeof o !== "object" || o === null || o.format !== ACTIVATION_JSON_FORMAT) {
    throw new GpuIndexError(`${name} has no "format": "${ACTIVATION_JSON_FORMAT}" field`);
  }
  if (o.version !== 1) {
    throw new GpuIndexError(`${name} has version ${o.version}: expected 1`);
  }
  if (!Array.isArray(o.layers) || o.layers.length === 0) {
    throw new GpuIndexError(`${name} has no "layers" array`);
  }
  const counts = o.layers.map((layer, i) => {
    if (!Array.isArray(layer)) throw new GpuIndexError(`${name}: layer ${i} is not an array`);
    const out = new Float64Array(layer.length);
    for (let j = 0; j < layer.length; j++) {
      const v = layer[j];
      if (typeof v !== "number" || !(v >= 0) || v === Infinity) {
        throw new GpuIndexError(`${name}: layer ${i} count ${j} is ${v}: expected a number >= 0`);
      }
      out[j] = v;
    }
    return out;
  });
  const tokens = typeof o.tokens === "number" ? o.tokens : undefined;
  return { counts, tokens, source: name };
}

/**
 * Encodes statistics in our JSON format.
 *
 * @param stats Counts (and optionally the token count).
 * @param extra Informative fields (`model`, `threshold`).
 * @returns JSON text.
 *
 * @example Round trip
 * ```ts
 * import { deepStrictEqual } from "node:assert/strict";
 * import { formatActivationJson, parseActivationJson } from "./stats.ts";
 * const text = formatActivationJson({ counts: [[1, 0, 2]], tokens: 2 });
 * deepStrictEqual([...parseActivationJson(text).counts[0]!], [1, 0, 2]);
 * ```
 */
export function formatActivationJson(
  stats: { counts: readonly ArrayLike<number>[]; tokens?: number },
  extra: { model?: string; threshold?: number } = {},
): string {
  const layers = stats.counts.map((c) => `[${Array.from(c).join(",")}]`);
  const head = {
    format: ACTIVATION_JSON_FORMAT,
    version: 1,
    ...(stats.tokens !== undefined ? { tokens: stats.tokens } : {}),
    ...extra,
  };
  const headText = JSON.stringify(head);
  return `${headText.slice(0, -1)},\n"layers":[\n${layers.join(",\n")}\n]}\n`;
}

/**
 * Reads the statistics of a model from a directory (synchronously): our `activation_counts.json` if present,
 * else `activation_<L>.pt` files matched by layer number.
 *
 * @param dir The activation directory (path or file URL).
 * @param opts `nLayer`: the model's layer count (every layer must have a file); `nFf`: the
 * model's neuron count per layer.
 * @returns The statistics.
 * @throws {GpuIndexError} If the directory is missing or empty, a layer file is missing, or the
 * sizes do not fit the model — the message names the fix (`deno task profile`).
 * @throws {CheckpointFormatError} If a `.pt` file is corrupted.
 */
export function readActivationDirSync(
  dir: string | URL,
  opts: { nLayer?: number; nFf?: number } = {},
): ActivationStats {
  const dirPath = dir instanceof URL ? decodeURIComponent(dir.pathname) : dir;
  const fix = `make them with "deno task profile -m MODEL -f TEXT --out ${dirPath}"`;
  let names: string[];
  try {
    names = [];
    for (const entry of Deno.readDirSync(dirPath)) if (entry.isFile) names.push(entry.name);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) {
      throw new GpuIndexError(
        `No activation statistics: directory ${dirPath} does not exist; ${fix}`,
        { cause },
      );
    }
    throw cause;
  }
  let stats: ActivationStats;
  if (names.includes(ACTIVATION_JSON)) {
    const path = `${dirPath}/${ACTIVATION_JSON}`;
    stats = parseActivationJson(Deno.readTextFileSync(path), path);
  } else {
    const byLayer = new Map<number, string>();
    for (const name of names) {
      const m = /^activation_(\d+)\.pt$/.exec(name);
      if (m) byLayer.set(Number(m[1]), name);
    }
    if (byLayer.size === 0) {
      throw new GpuIndexError(
        `No activation statistics in ${dirPath} (no ${ACTIVATION_JSON}, no activation_<L>.pt); ${fix}`,
      );
    }
    const nLayer = opts.nLayer ?? Math.max(...byLayer.keys()) + 1;
    const counts: Float64Array[] = [];
    for (let layer = 0; layer < nLayer; layer++) {
      const name = byLayer.get(layer);
      if (!name) {
        throw new GpuIndexError(
          `Activation statistics in ${dirPath} lack activation_${layer}.pt (the model has ${nLayer} layers); ${fix}`,
        );
      }
      const path = `${dirPath}/${name}`;
      counts.push(readActivationPt(Deno.readFileSync(path), path));
    }
    stats = { counts, source: dirPath };
  }
  if (opts.nLayer !== undefined && stats.counts.length !== opts.nLayer) {
    throw new GpuIndexError(
      `Activation statistics in ${stats.source} cover ${stats.counts.length} layers: the model has ${opts.nLayer}; ${fix}`,
    );
  }
  if (opts.nFf !== undefined) {
    stats.counts.forEach((c, i) => {
      if (c.length !== opts.nFf) {
        throw new GpuIndexError(
          `Activation statistics of layer ${i} in ${stats.source} have ${c.length} neurons: the model has ${opts.nFf}; ${fix}`,
        );
      }
    });
  }
  return stats;
}

/**
 * Reads the statistics of a model from a directory: our `activation_counts.json` if present,
 * else `activation_<L>.pt` files matched by layer number (see {@link readActivationDirSync}).
 *
 * @param dir The activation directory (path or file URL).
 * @param opts `nLayer` / `nFf`: the model's shape, checked against the files.
 * @returns The statistics.
 * @throws {GpuIndexError} If statistics are missing or do not fit (the message names the fix).
 * @throws {CheckpointFormatError} If a `.pt` file is corrupted.
 *
 * @example The statistics next to a model
 * ```ts ignore
 * import { readActivationDir } from "./stats.ts";
 * const stats = await readActivationDir("models/llama-7b/activation", { nLayer: 32, nFf: 11008 });
 * console.log(stats.counts.length, stats.tokens);
 * ```
 */
export function readActivationDir(
  dir: string | URL,
  opts: { nLayer?: number; nFf?: number } = {},
): Promise<ActivationStats> {
  try {
    return Promise.resolve(readActivationDirSync(dir, opts));
  } catch (error) {
    return Promise.reject(error);
  }
}
