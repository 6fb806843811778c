/**
 * Zero-copy weight views from a model file, with shape and type checks, and the tensor-name
 * table of every architecture (names verbatim, grep-able against llama.cpp and PowerInfer).
 *
 * @module
 */

import { ModelConfigError } from "../errors.ts";
import type { GgufFile, GgufTensorInfo } from "../gguf/reader.ts";
import { GgmlType, ggmlTypeName, rowByteSize } from "../gguf/types.ts";
import { dequantize } from "../quant/quantize.ts";
import type { SparseFfnWeights, WeightTensor } from "../backend/backend.ts";
import type { ModelConfig } from "./config.ts";

/** Types the matmul kernels accept for 2-D weights. */
export const MATMUL_TYPES: readonly GgmlType[] = [
  GgmlType.F32,
  GgmlType.F16,
  GgmlType.Q4_0,
  GgmlType.Q8_0,
  GgmlType.Q6_K,
];

function describe(ne: readonly number[]): string {
  return `[${ne.join(", ")}]`;
}

/** Looks a tensor up, or throws `Tensor "<name>" is missing`. */
export function requireTensor(file: GgufFile, name: string): GgufTensorInfo {
  const info = file.tensor(name);
  if (!info) throw new ModelConfigError(`Tensor "${name}" is missing`);
  return info;
}

/**
 * A 2-D weight with ggml dims `[nCols, nRows]`, checked against the expected shape and the
 * types matmul supports.
 *
 * @throws {ModelConfigError} If it is missing, has another shape or an unsupported type.
 */
export function matrix(file: GgufFile, name: string, nCols: number, nRows: number): WeightTensor {
  const info = requireTensor(file, name);
  const ne = info.ne.filter((d, i) => i < 2 || d !== 1);
  if (ne.length !== 2 || ne[0] !== nCols || ne[1] !== nRows) {
    throw new ModelConfigError(
      `Tensor "${name}" has shape ${describe(info.ne)}: expected ${describe([nCols, nRows])}`,
    );
  }
  if (!MATMUL_TYPES.includes(info.type)) {
    throw new ModelConfigError(
      `Tensor "${name}" has type ${ggmlTypeName(info.type)}: expected one of ${
        MATMUL_TYPES.map(ggmlTypeName).join(", ")
      }`,
    );
  }
  return { name, type: info.type, nRows, nCols, data: file.tensorData(info) };
}

/**
 * One matrix over several that lie back to back in the mapping, with the same type and row
 * length: a zero-copy view whose rows are those of the first part, then of the next, and so on
 * (one matmul over it gives each part's rows, bit for bit, one FFI call and one pass over the
 * input instead of several). Null when they are not adjacent.
 *
 * @param name A name for the view (messages).
 * @param parts The matrices, in file order.
 * @returns The stacked view, or null.
 */
export function stackedRows(name: string, parts: readonly WeightTensor[]): WeightTensor | null {
  const first = parts[0];
  if (!first) return null;
  let end = first.data.byteOffset + first.data.byteLength;
  let nRows = first.nRows;
  for (const p of parts.slice(1)) {
    if (
      p.type !== first.type || p.nCols !== first.nCols || p.data.buffer !== first.data.buffer ||
      p.data.byteOffset !== end
    ) {
      return null;
    }
    end += p.data.byteLength;
    nRows += p.nRows;
  }
  const data = new Uint8Array(
    first.data.buffer,
    first.data.byteOffset,
    end - first.data.byteOffset,
  );
  return { name, type: first.type, nRows, nCols: first.nCols, data };
}

/**
 * Like {@link matrix}, but also accepts types the matmul kernels lack (Q5_0: PowerInfer's
 * quantize writes predictors as Q5_0 for non-Q4_0 targets) by dequantizing them to an F32
 * copy. The predictor then runs on f32 activations instead of Q8_0 ones, so decisions within
 * rounding of the threshold may differ from PowerInfer.
 *
 * @throws {ModelConfigError} If it is missing, has another shape or a type with no reference.
 */
export function matrixOrDequantized(
  file: GgufFile,
  name: string,
  nCols: number,
  nRows: number,
): WeightTensor {
  const info = requireTensor(file, name);
  if (MATMUL_TYPES.includes(info.type) || info.type !== GgmlType.Q5_0) {
    return matrix(file, name, nCols, nRows);
  }
  if (info.ne[0] !== nCols || (info.ne[1] ?? 1) !== nRows) {
    throw new ModelConfigError(
      `Tensor "${name}" has shape ${describe(info.ne)}: expected ${describe([nCols, nRows])}`,
    );
  }
  const values = dequantize(info.type, file.tensorData(info));
  return { name, type: GgmlType.F32, nRows, nCols, data: new Uint8Array(values.buffer) };
}

/**
 * A 1-D f32 vector of length n (norm weights and biases). F32 data is viewed without a copy
 * when aligned; F16 data is widened (exactly) into a new array.
 *
 * @throws {ModelConfigError} If it is missing, has another length or type.
 */
export function vector(file: GgufFile, name: string, n: number): Float32Array {
  const info = requireTensor(file, name);
  const count = info.ne.reduce((a, b) => a * b, 1);
  if (count !== n || (info.ne[0] ?? 1) !== n) {
    throw new ModelConfigError(
      `Tensor "${name}" has shape ${describe(info.ne)}: expected [${n}]`,
    );
  }
  const bytes = file.tensorData(info);
  if (info.type === GgmlType.F32) {
    if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    return new Float32Array(bytes.slice().buffer);
  }
  if (info.type === GgmlType.F16) {
    const h = new Float16Array(bytes.slice().buffer);
    return Float32Array.from(h);
  }
  throw new ModelConfigError(
    `Tensor "${name}" has type ${ggmlTypeName(info.type)}: expected F32 or F16`,
  );
}

/** Optional 1-D vector: undefined when the tensor is absent. */
export function optionalVector(file: GgufFile, name: string, n: number): Float32Array | undefined {
  return file.tensor(name) ? vector(file, name, n) : undefined;
}

/**
 * Dequantizes row `row` of a weight into `out` (exactly, spec q4_0.md §2): the token embedding
 * lookup (`get_rows`).
 *
 * @throws {ModelConfigError} For types other than F32, F16, Q4_0, Q8_0 and Q6_K.
 * @throws {RangeError} If the row is out of range.
 */
export function dequantizeRow(w: WeightTensor, row: number, out: Float32Array): void {
  if (!Number.isInteger(row) || row < 0 || row >= w.nRows) {
    throw new RangeError(`Row ${row} of "${w.name}" is outside [0, ${w.nRows})`);
  }
  const n = w.nCols;
  const d = w.data;
  switch (w.type) {
    case GgmlType.F32: {
      const off = d.byteOffset + row * n * 4;
      if (off % 4 === 0) out.set(new Float32Array(d.buffer, off, n));
      else out.set(new Float32Array(d.slice(row * n * 4, (row + 1) * n * 4).buffer));
      return;
    }
    case GgmlType.F16: {
      const off = d.byteOffset + row * n * 2;
      const h = off % 2 === 0
        ? new Float16Array(d.buffer, off, n)
        : new Float16Array(d.slice(row * n * 2, (row + 1) * n * 2).buffer);
      for (let i = 0; i < n; i++) out[i] = h[i]!;
      return;
    }
    case GgmlType.Q4_0:
    case GgmlType.Q8_0:
    case GgmlType.Q6_K: {
      // exact dequantization per q4_0.md §2 (the quant module's scalar references)
      const rowBytes = rowByteSize(w.type, n);
      out.set(dequantize(w.type, d.subarray(row * rowBytes, (row + 1) * rowBytes)));
      return;
    }
    default:
      throw new ModelConfigError(
        `Cannot look up rows of "${w.name}" with type ${
          ggmlTypeName(w.type)
        }: expected F32, F16, Q4_0, Q8_0 or Q6_K`,
      );
  }
}

/**
 * The predictor and FFN tensors of one sparse (PWRI) layer: predictor fc1 `[nHidden, nEmbd]`
 * and fc2 `[nFf, nHidden]` (nHidden from the file), up and, when the architecture gates, gate
 * `[nFf, nEmbd]`, and the transposed down projection `ffn_down_t` `[nFf, nEmbd]`.
 *
 * @param file The model file.
 * @param c Its configuration.
 * @param layer The block index.
 * @param gated Whether the layer has `ffn_gate` (LLaMA/bamboo yes, Falcon no).
 * @returns Views of the tensors.
 * @throws {ModelConfigError} If a tensor is missing or has the wrong shape or type.
 */
export function sparseFfnWeights(
  file: GgufFile,
  c: ModelConfig,
  layer: number,
  gated: boolean,
): SparseFfnWeights {
  const p = `blk.${layer}`;
  const nHidden = file.tensor(`${p}.fc1.weight`)?.ne[1] ?? 0;
  return {
    fc1: matrixOrDequantized(file, `${p}.fc1.weight`, c.nEmbd, nHidden),
    fc2: matrixOrDequantized(file, `${p}.fc2.weight`, nHidden, c.nFf),
    up: matrix(file, `${p}.ffn_up.weight`, c.nEmbd, c.nFf),
    gate: gated ? matrix(file, `${p}.ffn_gate.weight`, c.nEmbd, c.nFf) : null,
    downT: matrix(file, `${p}.ffn_down_t.weight`, c.nEmbd, c.nFf),
  };
}
