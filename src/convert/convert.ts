/**
 * Hugging Face checkpoint (+ PowerInfer predictor directory) → PowerInfer GGUF, reproducing
 * PowerInfer's converters byte for byte: `convert.py` for LLaMA-family models (ReLU-LLaMA,
 * Mistral-style GQA, Bamboo), `convert-dense.py` for dense LLaMA GGUF, and
 * `convert-hf-to-powerinfer-gguf.py` for Falcon (spec: shared/spec/gguf.md §5–§6).
 *
 * Tensors are read, converted and written one at a time (the writer pulls each tensor's bytes
 * when its turn comes), so a checkpoint never has to fit in memory.
 *
 * @module
 */

import { basename, dirname, join, resolve } from "node:path";
import { ConvertError, TokenizerError } from "../errors.ts";
import {
  GgmlType,
  type GgufKv,
  type GgufMagic,
  GgufValueType,
  tensorByteSize,
} from "../gguf/types.ts";
import { type GgufWriteProgress, type GgufWriteTensor, writeGguf } from "../gguf/writer.ts";
import { fsErrorReason } from "../gguf/output_file.ts";
import { openNative } from "../../ffi/library.ts";
import { quantizeRows } from "../../ffi/ops.ts";
import { quantize } from "../quant/quantize.ts";
import { planQuantization } from "../quant/quantize_model.ts";
import { FileSource } from "../torch/source.ts";
import { openTorchStateDict, type TorchTensor } from "../torch/torch.ts";
import { type Checkpoint, type LazyTensor, openCheckpoint } from "./checkpoint.ts";
import { f32FromF16Bits, f32ToF16Bytes, toF32 } from "./dtype.ts";
import { gpt2VocabKvs, llamaVocabKvs } from "./vocab.ts";

/** Output element type: like convert.py's `--outtype` (q4_0 = f16 conversion, then Q4_0 quantize). */
export type ConvertOutType = "f32" | "f16" | "q4_0";

/** Conversion options. */
export interface ConvertOptions {
  /** Default "f16". */
  outtype?: ConvertOutType;
  /** Write a dense llama.cpp GGUF (magic GGUF, `ffn_down`, no predictors). LLaMA only. */
  dense?: boolean;
  /** PowerInfer predictor directory (`model_<layer>.pt` + `config.json`); required unless dense. */
  predictorDir?: string;
}

/** Everything needed to write the file: metadata and lazily converted tensors. */
export interface ConversionPlan extends Disposable {
  arch: "llama" | "bamboo" | "falcon";
  magic: GgufMagic;
  metadata: GgufKv[];
  tensors: GgufWriteTensor[];
  close(): void;
}

/** A tensor to write, before its output type is chosen. */
interface PlannedTensor {
  name: string;
  /** PyTorch-order shape of the data the transform produces. */
  shape: number[];
  /** Source dtype (decides Falcon's f16 rule). */
  srcDtype: string;
  load: () => Float32Array;
}

type HfConfig = Record<string, unknown>;

const SUPPORTED = "supported: LLaMA-family (model_type llama / mistral / bamboo) and Falcon " +
  "(model_type falcon / RefinedWeb)";

/**
 * Refuses an output path that is one of the checkpoint's own files: the rename at the end would
 * replace, say, `pytorch_model.bin` with the GGUF. An existing GGUF/PWRI file there (an earlier
 * output) may be overwritten; convert never reads one.
 *
 * @param outFile The output path.
 * @param modelDir The Hugging Face model directory.
 * @param predictorDir The predictor directory, if any.
 * @throws {ConvertError} If `outFile` is an existing non-GGUF file in either directory.
 *
 * @example The checkpoint is not an output path
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { checkOutFileIsNotInput } from "./convert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/config.json`, "{}");
 * throws(() => checkOutFileIsNotInput(`${dir}/config.json`, dir), /would overwrite/);
 * checkOutFileIsNotInput(`${dir}/model.gguf`, dir); // a new file is fine
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function checkOutFileIsNotInput(
  outFile: string,
  modelDir: string,
  predictorDir?: string,
): void {
  const real = (p: string): string | undefined => {
    try {
      return Deno.realPathSync(p);
    } catch {
      return undefined;
    }
  };
  const out = real(outFile);
  if (out === undefined) return; // not there yet
  const dirs = [modelDir, predictorDir].filter((d) => d !== undefined).map((d) => real(d!));
  if (!dirs.includes(dirname(out))) return;
  let head = new Uint8Array(0);
  try {
    using f = Deno.openSync(out, { read: true });
    head = new Uint8Array(4);
    if ((f.readSync(head) ?? 0) < 4) head = new Uint8Array(0);
  } catch {
    // unreadable: treat as an input to be safe
  }
  const magic = new TextDecoder().decode(head);
  if (magic === "GGUF" || magic === "PWRI") return;
  throw new ConvertError(
    `Output path "${outFile}" would overwrite input file "${out}" of the checkpoint: choose another --outfile`,
  );
}

/** Refuses a missing directory or a file given where a directory belongs, saying which. */
function checkDirectory(dir: string, what: string, expected: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(dir);
  } catch (cause) {
    throw new ConvertError(
      `Cannot read ${what} "${dir}": ${fsErrorReason(cause)} (expected ${expected})`,
      { cause },
    );
  }
  if (!info.isDirectory) {
    throw new ConvertError(
      `${what[0]!.toUpperCase()}${
        what.slice(1)
      } "${dir}" is a file: give the directory (${expected})`,
    );
  }
}

function readConfig(dir: string): HfConfig {
  checkDirectory(dir, "model directory", "a Hugging Face model directory with config.json");
  let text: string;
  try {
    text = Deno.readTextFileSync(join(dir, "config.json"));
  } catch (cause) {
    throw new ConvertError(
      `Cannot read ${join(dir, "config.json")}: ${
        fsErrorReason(cause)
      } (MODEL_DIR must be a Hugging Face model directory)`,
      { cause },
    );
  }
  try {
    const c = JSON.parse(text);
    if (!c || typeof c !== "object" || Array.isArray(c)) throw new Error("not an object");
    return c;
  } catch (cause) {
    throw new ConvertError(`${join(dir, "config.json")} is not a JSON object`, { cause });
  }
}

function int(config: HfConfig, keys: string[], what: string, fallback?: number): number {
  for (const k of keys) {
    const v = config[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      throw new ConvertError(
        `config.json ${k} is ${JSON.stringify(v)}: expected a positive integer`,
      );
    }
    return v;
  }
  if (fallback !== undefined) return fallback;
  throw new ConvertError(`config.json has no ${what} (${keys.join(" / ")})`);
}

function num(config: HfConfig, key: string): number | undefined {
  const v = config[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new ConvertError(`config.json ${key} is ${JSON.stringify(v)}: expected a number`);
  }
  return v;
}

function detectArch(config: HfConfig): "llama" | "bamboo" | "falcon" {
  const modelType = String(config.model_type ?? "");
  const archs = Array.isArray(config.architectures) ? config.architectures.map(String) : [];
  if (modelType === "llama" || modelType === "mistral") return "llama";
  if (modelType === "bamboo" || archs.some((a) => a.startsWith("Bamboo"))) return "bamboo";
  if (
    modelType === "falcon" || modelType === "RefinedWeb" || modelType === "RefinedWebModel" ||
    archs.includes("FalconForCausalLM") || archs.includes("RWForCausalLM")
  ) return "falcon";
  if (archs.some((a) => a === "LlamaForCausalLM" || a === "MistralForCausalLM")) return "llama";
  throw new ConvertError(
    `Unsupported architecture ${JSON.stringify(modelType || archs.join(","))}: ${SUPPORTED}. ` +
      `PowerInfer's sparse inference exists only for these ReLU models`,
  );
}

function checkShape(name: string, shape: number[], want: number[]): void {
  if (shape.length !== want.length || shape.some((d, i) => d !== want[i])) {
    throw new ConvertError(
      `Tensor "${name}" has shape [${shape}]: config.json implies [${want}]`,
    );
  }
}

function f32Of(t: TorchTensor): Float32Array {
  return toF32(t.data, t.dtype);
}

/** Rows of a [nRows, rowLen] matrix, re-ordered: out row r = in row `from(r)`. */
function permuteRows(x: Float32Array, nRows: number, from: (r: number) => number): Float32Array {
  const rowLen = x.length / nRows;
  const out = new Float32Array(x.length);
  for (let r = 0; r < nRows; r++) {
    const s = from(r) * rowLen;
    out.set(x.subarray(s, s + rowLen), r * rowLen);
  }
  return out;
}

/**
 * convert.py's Q/K permutation: rows viewed as [nHead, 2, hd/2] get their last two axes
 * swapped, so new row `h·hd + 2j + k` = old row `h·hd + k·hd/2 + j` (HF half-split rotary pairs
 * → ggml adjacent pairs).
 */
export function permuteQk(x: Float32Array, nRows: number, nHead: number): Float32Array {
  const hd = nRows / nHead;
  if (!Number.isInteger(hd) || hd % 2 !== 0) {
    throw new ConvertError(`Cannot permute ${nRows} rows into ${nHead} heads of even size`);
  }
  const half = hd / 2;
  return permuteRows(x, nRows, (r) => {
    const h = Math.floor(r / hd);
    const i = r % hd;
    return h * hd + (i % 2) * half + Math.floor(i / 2);
  });
}

/** Transpose of a row-major [nRows, nCols] matrix. */
export function transpose(x: Float32Array, nRows: number, nCols: number): Float32Array {
  const out = new Float32Array(x.length);
  const B = 32; // tiles keep both sides in cache
  for (let r0 = 0; r0 < nRows; r0 += B) {
    for (let c0 = 0; c0 < nCols; c0 += B) {
      const r1 = Math.min(nRows, r0 + B);
      const c1 = Math.min(nCols, c0 + B);
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) out[c * nRows + r] = x[r * nCols + c]!;
      }
    }
  }
  return out;
}

/**
 * Falcon's fused QKV re-layout: HF groups rows per KV group as (q × nHead/nHeadKv, k, v), each
 * `hd` rows; the GGUF stores all q heads, then all k heads, then all v heads.
 */
export function relayoutFalconQkv(
  x: Float32Array,
  nHead: number,
  nHeadKv: number,
  headDim: number,
): Float32Array {
  const perGroup = nHead / nHeadKv + 2;
  const nRows = (nHead + 2 * nHeadKv) * headDim;
  const qPer = nHead / nHeadKv;
  return permuteRows(x, nRows, (r) => {
    const head = Math.floor(r / headDim);
    const i = r % headDim;
    let g: number, slot: number;
    if (head < nHead) {
      g = Math.floor(head / qPer);
      slot = head % qPer;
    } else if (head < nHead + nHeadKv) {
      g = head - nHead;
      slot = qPer;
    } else {
      g = head - nHead - nHeadKv;
      slot = qPer + 1;
    }
    return (g * perGroup + slot) * headDim + i;
  });
}

interface PredictorLayer {
  fc1: LazyTensor;
  fc2: LazyTensor;
}

/** Reads a predictor directory: `model_<i>.pt` for i = 0..n-1, `config.json` `sparse_threshold`. */
function openPredictors(
  dir: string,
  nLayer: number,
): { layers: PredictorLayer[]; threshold: number | undefined; close: () => void } {
  const files: number[] = [];
  checkDirectory(dir, "predictor directory", "PowerInfer's model_<layer>.pt files");
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch (cause) {
    throw new ConvertError(`Cannot read predictor directory ${dir}: ${fsErrorReason(cause)}`, {
      cause,
    });
  }
  for (const e of entries) {
    const m = /^model_(\d+)\.pt$/.exec(e.name);
    if (m && (e.isFile || e.isSymlink)) files.push(Number(m[1]));
  }
  files.sort((a, b) => a - b);
  if (files.length !== nLayer || files.some((f, i) => f !== i)) {
    throw new ConvertError(
      `Predictor directory ${dir} holds ${files.length} predictors (model_<layer>.pt for layers ` +
        `[${files.join(", ")}]): the model has ${nLayer} layers, expected model_0.pt .. model_${
          nLayer - 1
        }.pt`,
    );
  }
  let threshold: number | undefined;
  try {
    const cfg = JSON.parse(Deno.readTextFileSync(join(dir, "config.json")));
    if (typeof cfg?.sparse_threshold === "number") threshold = cfg.sparse_threshold;
  } catch { /* convert.py writes the key only when the predictor config has it */ }
  const sources: FileSource[] = [];
  const close = () => {
    for (const s of sources.splice(0)) s.close();
  };
  const layers: PredictorLayer[] = [];
  try {
    for (let i = 0; i < nLayer; i++) {
      const path = join(dir, `model_${i}.pt`);
      const src = new FileSource(path);
      sources.push(src);
      const sd = openTorchStateDict(src);
      const get = (k: string): LazyTensor => {
        const ref = sd.get(k);
        if (!ref) throw new ConvertError(`Predictor ${path} has no "${k}" tensor`);
        return { name: k, dtype: ref.dtype, shape: ref.shape, load: () => ref.load() };
      };
      layers.push({ fc1: get("fc1.weight"), fc2: get("fc2.weight") });
    }
  } catch (e) {
    close();
    throw e;
  }
  return { layers, threshold, close };
}

function predictorTensors(
  layers: PredictorLayer[],
  nEmbd: number,
  nFf: number,
  layerInput: string,
): PlannedTensor[] {
  const out: PlannedTensor[] = [];
  layers.forEach((p, i) => {
    const h = p.fc1.shape[0]!;
    checkShape(`model_${i}.pt fc1.weight`, p.fc1.shape, [h, nEmbd]);
    checkShape(`model_${i}.pt fc2.weight`, p.fc2.shape, [nFf, h]);
    void layerInput;
    for (const [k, t] of [["fc1", p.fc1], ["fc2", p.fc2]] as const) {
      out.push({
        name: `blk.${i}.${k}.weight`,
        shape: t.shape,
        srcDtype: t.dtype,
        load: () => f32Of(t.load()),
      });
    }
  });
  return out;
}

const u32 = (key: string, value: number): GgufKv => ({ key, type: GgufValueType.UINT32, value });
const f32 = (key: string, value: number): GgufKv => ({ key, type: GgufValueType.FLOAT32, value });
const str = (key: string, value: string): GgufKv => ({ key, type: GgufValueType.STRING, value });

/** llama_ftype written by the converter (q4_0 is written as quantize would: 2). */
const FILE_TYPE: Record<ConvertOutType, number> = { f32: 0, f16: 1, q4_0: 2 };

function planLlama(
  arch: "llama" | "bamboo",
  dir: string,
  config: HfConfig,
  ckpt: Checkpoint,
  opts: Required<Pick<ConvertOptions, "outtype" | "dense">> & ConvertOptions,
  closers: (() => void)[],
): { metadata: GgufKv[]; tensors: PlannedTensor[] } {
  const nVocab = int(config, ["vocab_size"], "vocab size");
  const nEmbd = int(config, ["hidden_size"], "hidden size");
  const nLayer = int(config, ["num_hidden_layers"], "layer count");
  const nFf = int(config, ["intermediate_size"], "FFN size");
  const nHead = int(config, ["num_attention_heads"], "head count");
  const nHeadKv = int(config, ["num_key_value_heads"], "KV head count", nHead);
  const nCtx = int(config, ["max_sequence_length", "max_position_embeddings"], "context length");
  const eps = num(config, "rms_norm_eps");
  if (eps === undefined) throw new ConvertError("config.json has no rms_norm_eps");
  if (nEmbd % nHead !== 0 || nHead % nHeadKv !== 0) {
    throw new ConvertError(
      `config.json heads do not divide: hidden_size ${nEmbd}, heads ${nHead}, kv heads ${nHeadKv}`,
    );
  }
  const act = String(config.hidden_act ?? "silu");
  if (!opts.dense && act !== "relu") {
    throw new ConvertError(
      `Unsupported activation "${act}" for a PowerInfer (sparse) file: expected "relu". ` +
        `PowerInfer's predictors skip neurons whose ReLU output is zero; a ${act} model has no ` +
        `such sparsity. Use --dense for a plain GGUF`,
    );
  }
  const nEmbdGqa = nEmbd / (nHead / nHeadKv);
  const p = `${arch}.`;
  const metadata: GgufKv[] = [
    str("general.architecture", arch),
    str("general.name", nCtx === 4096 ? "LLaMA v2" : basename(resolve(dir))),
    u32(`${p}context_length`, nCtx),
    u32(`${p}embedding_length`, nEmbd),
    u32(`${p}block_count`, nLayer),
    u32(`${p}feed_forward_length`, nFf),
    u32(`${p}rope.dimension_count`, nEmbd / nHead),
    u32(`${p}attention.head_count`, nHead),
    u32(`${p}attention.head_count_kv`, nHeadKv),
    f32(`${p}attention.layer_norm_rms_epsilon`, eps),
  ];
  const theta = num(config, "rope_theta");
  if (theta !== undefined) metadata.push(f32(`${p}rope.freq_base`, theta));
  const scaling = config.rope_scaling as Record<string, unknown> | null | undefined;
  if (scaling && typeof scaling === "object" && scaling.type) {
    const typ = String(scaling.type);
    const factor = scaling.factor;
    if ((typ !== "linear" && typ !== "yarn") || typeof factor !== "number") {
      throw new ConvertError(
        `Unsupported rope_scaling ${
          JSON.stringify(scaling)
        }: expected type linear or yarn with a factor`,
      );
    }
    metadata.push(str(`${p}rope.scaling.type`, typ), f32(`${p}rope.scaling.factor`, factor));
    if (typ === "yarn") {
      const orig = scaling.original_max_position_embeddings;
      if (typeof orig !== "number") {
        throw new ConvertError("rope_scaling yarn needs original_max_position_embeddings");
      }
      metadata.push(u32(`${p}rope.scaling.original_context_length`, orig));
      metadata.push({
        key: `${p}rope.scaling.finetuned`,
        type: GgufValueType.BOOL,
        value: scaling.finetuned === true,
      });
    }
  }
  metadata.push(u32("general.file_type", FILE_TYPE[opts.outtype]));

  let predictors: PredictorLayer[] = [];
  if (!opts.dense) {
    if (!opts.predictorDir) {
      throw new ConvertError(
        "A PowerInfer file needs the predictor directory (model_<layer>.pt): pass PREDICTOR_DIR, or --dense for a plain GGUF",
      );
    }
    const pr = openPredictors(opts.predictorDir, nLayer);
    closers.push(pr.close);
    predictors = pr.layers;
    if (pr.threshold !== undefined) metadata.push(f32("powerinfer.sparse_threshold", pr.threshold));
  }
  metadata.push(...llamaVocabKvs(dir, nVocab));

  const tensors: PlannedTensor[] = [];
  const seen = new Set<string>();
  for (const [hfName, t] of ckpt.tensors) {
    let m: RegExpExecArray | null;
    let name: string;
    let want: number[];
    let transform: ((x: Float32Array) => Float32Array) | undefined;
    let outShape = t.shape;
    if (hfName === "model.embed_tokens.weight") {
      name = "token_embd.weight";
      want = [nVocab, nEmbd];
    } else if (hfName === "model.norm.weight") {
      name = "output_norm.weight";
      want = [nEmbd];
    } else if (hfName === "lm_head.weight") {
      name = "output.weight";
      want = [nVocab, nEmbd];
    } else if ((m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName))) {
      const i = Number(m[1]);
      if (i >= nLayer) {
        throw new ConvertError(`Tensor "${hfName}" is for layer ${i}: config.json has ${nLayer}`);
      }
      const b = `blk.${i}.`;
      switch (m[2]) {
        case "self_attn.rotary_emb.inv_freq":
          continue; // convert.py skips rotary tables
        case "input_layernorm.weight":
          [name, want] = [`${b}attn_norm.weight`, [nEmbd]];
          break;
        case "post_attention_layernorm.weight":
          [name, want] = [`${b}ffn_norm.weight`, [nEmbd]];
          break;
        case "self_attn.q_proj.weight":
          [name, want] = [`${b}attn_q.weight`, [nEmbd, nEmbd]];
          transform = (x) => permuteQk(x, nEmbd, nHead);
          break;
        case "self_attn.k_proj.weight":
          [name, want] = [`${b}attn_k.weight`, [nEmbdGqa, nEmbd]];
          transform = (x) => permuteQk(x, nEmbdGqa, nHeadKv);
          break;
        case "self_attn.v_proj.weight":
          [name, want] = [`${b}attn_v.weight`, [nEmbdGqa, nEmbd]];
          break;
        case "self_attn.o_proj.weight":
          [name, want] = [`${b}attn_output.weight`, [nEmbd, nEmbd]];
          break;
        case "mlp.gate_proj.weight":
          [name, want] = [`${b}ffn_gate.weight`, [nFf, nEmbd]];
          break;
        case "mlp.up_proj.weight":
          [name, want] = [`${b}ffn_up.weight`, [nFf, nEmbd]];
          break;
        case "mlp.down_proj.weight":
          want = [nEmbd, nFf];
          if (opts.dense) name = `${b}ffn_down.weight`;
          else {
            // PWRI stores down_proj transposed: row j = neuron j's output vector.
            name = `${b}ffn_down_t.weight`;
            transform = (x) => transpose(x, nEmbd, nFf);
            outShape = [nFf, nEmbd];
          }
          break;
        default:
          throw new ConvertError(`Unexpected tensor "${hfName}" in a ${arch} checkpoint`);
      }
    } else if (/rotary_emb\.inv_freq$/.test(hfName)) {
      continue;
    } else {
      throw new ConvertError(`Unexpected tensor "${hfName}" in a ${arch} checkpoint`);
    }
    checkShape(hfName, t.shape, want);
    seen.add(name);
    const tr = transform;
    tensors.push({
      name,
      shape: outShape,
      srcDtype: t.dtype,
      load: () => (tr ? tr(f32Of(t.load())) : f32Of(t.load())),
    });
  }
  const required = ["token_embd.weight", "output_norm.weight", "output.weight"];
  for (let i = 0; i < nLayer; i++) {
    for (const s of ["attn_norm", "ffn_norm", "attn_q", "attn_k", "attn_v", "attn_output"]) {
      required.push(`blk.${i}.${s}.weight`);
    }
    for (const s of ["ffn_gate", "ffn_up", opts.dense ? "ffn_down" : "ffn_down_t"]) {
      required.push(`blk.${i}.${s}.weight`);
    }
  }
  const missing = required.filter((n) => !seen.has(n));
  if (missing.length > 0) {
    throw new ConvertError(
      `Checkpoint is missing ${missing.length} tensor(s) (GGUF names): ${
        missing.slice(0, 8).join(", ")
      }${missing.length > 8 ? ", ..." : ""}`,
    );
  }
  // convert.py: checkpoint tensors first, then the predictors layer by layer.
  tensors.push(...predictorTensors(predictors, nEmbd, nFf, "ffn_inp"));
  return { metadata, tensors };
}

function planFalcon(
  dir: string,
  config: HfConfig,
  ckpt: Checkpoint,
  opts: Required<Pick<ConvertOptions, "outtype" | "dense">> & ConvertOptions,
  closers: (() => void)[],
): { metadata: GgufKv[]; tensors: PlannedTensor[] } {
  if (opts.dense) {
    throw new ConvertError(
      "Dense Falcon GGUF is not supported: PowerInfer runs Falcon only as a sparse (PWRI) model",
    );
  }
  const nLayer = int(config, ["num_hidden_layers", "n_layer"], "layer count");
  const nHead = int(config, ["num_attention_heads", "n_head"], "head count");
  const nHeadKv = int(config, ["num_kv_heads", "n_head_kv"], "KV head count", 1);
  const nEmbd = int(config, ["hidden_size"], "hidden size");
  const eps = num(config, "layer_norm_epsilon");
  if (eps === undefined) throw new ConvertError("config.json has no layer_norm_epsilon");
  const act = config.activation;
  if (act !== undefined && act !== "relu") {
    throw new ConvertError(
      `Unsupported activation "${act}" for a PowerInfer (sparse) Falcon: expected "relu". ` +
        `PowerInfer's predictors skip neurons whose ReLU output is zero; a ${act} model has no ` +
        `such sparsity`,
    );
  }
  if (nEmbd % nHead !== 0 || nHead % nHeadKv !== 0) {
    throw new ConvertError(
      `config.json heads do not divide: hidden_size ${nEmbd}, heads ${nHead}, kv heads ${nHeadKv}`,
    );
  }
  // The HF converter ignores ffn_hidden_size: n_ff is 4 * hidden_size.
  const nFf = 4 * nEmbd;
  const headDim = nEmbd / nHead;
  const nQkv = (nHead + 2 * nHeadKv) * headDim;
  const metadata: GgufKv[] = [
    str("general.architecture", "falcon"),
    str("general.name", "Falcon"),
    u32("falcon.context_length", 2048),
    str("falcon.tensor_data_layout", "jploski"),
    u32("falcon.embedding_length", nEmbd),
    u32("falcon.feed_forward_length", nFf),
    u32("falcon.block_count", nLayer),
    u32("falcon.attention.head_count", nHead),
    u32("falcon.attention.head_count_kv", nHeadKv),
    f32("falcon.attention.layer_norm_epsilon", eps),
    u32("general.file_type", FILE_TYPE[opts.outtype]),
  ];
  if (!opts.predictorDir) {
    throw new ConvertError(
      "A PowerInfer Falcon file needs the predictor directory (model_<layer>.pt): pass PREDICTOR_DIR",
    );
  }
  const pr = openPredictors(opts.predictorDir, nLayer);
  closers.push(pr.close);
  if (pr.threshold !== undefined) metadata.push(f32("powerinfer.sparse_threshold", pr.threshold));
  const vocabSize = config.vocab_size;
  metadata.push(...gpt2VocabKvs(dir, typeof vocabSize === "number" ? vocabSize : undefined));
  const nVocab = (metadata.find((kv) => kv.key === "tokenizer.ggml.tokens")!.value as unknown[])
    .length;

  // The HF converter writes the predictors first, then the checkpoint's tensors in order.
  const tensors = predictorTensors(pr.layers, nEmbd, nFf, "layer input");
  const seen = new Set<string>();
  for (const [hfName, t] of ckpt.tensors) {
    let m: RegExpExecArray | null;
    let name: string;
    let want: number[];
    let transform: ((x: Float32Array) => Float32Array) | undefined;
    let outShape = t.shape;
    if (hfName === "transformer.word_embeddings.weight") {
      [name, want] = ["token_embd.weight", [nVocab, nEmbd]];
    } else if (hfName === "lm_head.weight") {
      [name, want] = ["output.weight", [nVocab, nEmbd]];
    } else if ((m = /^transformer\.ln_f\.(weight|bias)$/.exec(hfName))) {
      [name, want] = [`output_norm.${m[1]}`, [nEmbd]];
    } else if ((m = /^transformer\.h\.(\d+)\.(.+)$/.exec(hfName))) {
      const i = Number(m[1]);
      if (i >= nLayer) {
        throw new ConvertError(`Tensor "${hfName}" is for layer ${i}: config.json has ${nLayer}`);
      }
      const b = `blk.${i}.`;
      const rest = m[2]!;
      let n: RegExpExecArray | null;
      if ((n = /^(input_layernorm|ln_mlp)\.(weight|bias)$/.exec(rest))) {
        [name, want] = [`${b}attn_norm.${n[2]}`, [nEmbd]];
      } else if ((n = /^ln_attn\.(weight|bias)$/.exec(rest))) {
        [name, want] = [`${b}attn_norm_2.${n[1]}`, [nEmbd]];
      } else if (rest === "self_attention.query_key_value.weight") {
        [name, want] = [`${b}attn_qkv.weight`, [nQkv, nEmbd]];
        transform = (x) => relayoutFalconQkv(x, nHead, nHeadKv, headDim);
      } else if (rest === "self_attention.dense.weight") {
        [name, want] = [`${b}attn_output.weight`, [nEmbd, nEmbd]];
      } else if (rest === "mlp.dense_h_to_4h.weight") {
        [name, want] = [`${b}ffn_up.weight`, [nFf, nEmbd]];
      } else if (rest === "mlp.dense_4h_to_h.weight") {
        [name, want] = [`${b}ffn_down_t.weight`, [nEmbd, nFf]];
        transform = (x) => transpose(x, nEmbd, nFf);
        outShape = [nFf, nEmbd];
      } else {
        throw new ConvertError(`Unexpected tensor "${hfName}" in a Falcon checkpoint`);
      }
    } else {
      throw new ConvertError(`Unexpected tensor "${hfName}" in a Falcon checkpoint`);
    }
    checkShape(hfName, t.shape, want);
    seen.add(name);
    const tr = transform;
    tensors.push({
      name,
      shape: outShape,
      srcDtype: t.dtype,
      load: () => (tr ? tr(f32Of(t.load())) : f32Of(t.load())),
    });
  }
  const required = ["token_embd.weight", "output_norm.weight", "output_norm.bias", "output.weight"];
  for (let i = 0; i < nLayer; i++) {
    for (const s of ["attn_norm.weight", "attn_norm.bias", "attn_qkv.weight"]) {
      required.push(`blk.${i}.${s}`);
    }
    for (const s of ["attn_output.weight", "ffn_up.weight", "ffn_down_t.weight"]) {
      required.push(`blk.${i}.${s}`);
    }
  }
  const missing = required.filter((n) => !seen.has(n));
  if (missing.length > 0) {
    const tied = missing.includes("output.weight")
      ? " (a tied checkpoint must still hold lm_head.weight: PowerInfer's loader requires output.weight)"
      : "";
    throw new ConvertError(
      `Checkpoint is missing ${missing.length} tensor(s) (GGUF names): ${
        missing.slice(0, 8).join(", ")
      }${tied}`,
    );
  }
  return { metadata, tensors };
}

/** Output ggml type of one tensor under each converter's rules. */
function outputType(
  arch: string,
  outtype: ConvertOutType,
  t: PlannedTensor,
): GgmlType {
  if (arch === "falcon") {
    // convert-hf-to-powerinfer-gguf.py: bf16 and others are widened to f32 first; shapes squeezed.
    const nDims = t.shape.filter((d) => d !== 1).length;
    const src = t.srcDtype === "float16" ? "f16" : "f32";
    if (outtype === "f32") return GgmlType.F32;
    if (src === "f16") return nDims === 1 ? GgmlType.F32 : GgmlType.F16;
    return t.name.endsWith(".weight") && nDims === 2 ? GgmlType.F16 : GgmlType.F32;
  }
  // convert.py: 1-D tensors are always f32.
  if (outtype === "f32") return GgmlType.F32;
  return t.shape.length > 1 ? GgmlType.F16 : GgmlType.F32;
}

function ggmlNe(shape: number[], squeeze: boolean): number[] {
  const s = squeeze ? shape.filter((d) => d !== 1) : shape;
  return (s.length === 0 ? [1] : [...s]).reverse();
}

let nativeQuantize: boolean | undefined;
function hasNativeQuantize(): boolean {
  if (nativeQuantize === undefined) {
    try {
      openNative();
      nativeQuantize = true;
    } catch {
      nativeQuantize = false; // the TS references give the same bytes, only slower
    }
  }
  return nativeQuantize;
}

function encode(x: Float32Array, type: GgmlType, ne: number[]): Uint8Array {
  if (type === GgmlType.F32) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  const f16 = f32ToF16Bytes(x);
  if (type === GgmlType.F16) return f16;
  // q4_0 outtype: quantize what the f16 file would hold, exactly as PowerInfer's quantize does.
  const nCols = ne[0]!;
  const nRows = x.length / nCols;
  if (hasNativeQuantize()) {
    const out = new Uint8Array(tensorByteSize(type, ne));
    quantizeRows(out, type, f16, GgmlType.F16, nRows, nCols);
    return out;
  }
  const h = new Uint16Array(f16.buffer);
  const y = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) y[i] = f32FromF16Bits(h[i]!);
  return quantize(type, y);
}

/**
 * Plans a conversion: reads config, tokenizer and predictor headers and returns the GGUF
 * metadata plus one lazy tensor provider per output tensor (nothing big is read yet).
 *
 * @param modelDir Hugging Face model directory (config.json, weights, tokenizer).
 * @param options Output type, dense mode, predictor directory.
 * @returns The plan; call `close()` (or `using`) when done.
 * @throws {ConvertError} Unsupported architecture/activation, missing tensors or predictors,
 * shapes that disagree with config.json.
 * @throws {CheckpointFormatError | TokenizerError} Corrupt weight or tokenizer files.
 *
 * @example An unsupported architecture is named, with the supported ones
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { ConvertError } from "../errors.ts";
 * import { planConversion } from "./convert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/config.json`, JSON.stringify({ model_type: "gpt2" }));
 * throws(() => planConversion(dir), (e: Error) => e instanceof ConvertError && /Falcon/.test(e.message));
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function planConversion(modelDir: string, options: ConvertOptions = {}): ConversionPlan {
  const outtype = options.outtype ?? "f16";
  if (!["f32", "f16", "q4_0"].includes(outtype)) {
    throw new ConvertError(`Unsupported outtype "${outtype}": expected f32, f16 or q4_0`);
  }
  const dense = options.dense ?? false;
  const config = readConfig(modelDir);
  const arch = detectArch(config);
  const ckpt = openCheckpoint(modelDir);
  const closers: (() => void)[] = [() => ckpt.close()];
  const close = () => {
    for (const c of closers.splice(0)) c();
  };
  try {
    const opts = { ...options, outtype, dense };
    const planned = arch === "falcon"
      ? planFalcon(modelDir, config, ckpt, opts, closers)
      : planLlama(arch, modelDir, config, ckpt, opts, closers);
    const metadata = planned.metadata;
    if (outtype === "q4_0") metadata.push(u32("general.quantization_version", 2));
    const infos = planned.tensors.map((t) => ({
      name: t.name,
      type: outputType(arch, outtype === "q4_0" ? "f16" : outtype, t),
      ne: ggmlNe(t.shape, arch === "falcon"),
      offsetBytes: 0,
      byteLength: 0,
    }));
    // q4_0: the types PowerInfer's quantize gives each tensor of the f16 file (H-quant's rules).
    const types = outtype === "q4_0"
      ? planQuantization(infos, arch, "Q4_0").map((e) => e.dstType)
      : infos.map((i) => i.type);
    const tensors: GgufWriteTensor[] = planned.tensors.map((t, i) => {
      const { name, ne } = infos[i]!;
      const type = types[i]!;
      return { name, type, ne, data: () => encode(t.load(), type, ne) };
    });
    return {
      arch,
      magic: dense ? "GGUF" : "PWRI",
      metadata,
      tensors,
      close,
      [Symbol.dispose]: close,
    };
  } catch (e) {
    close();
    if (e instanceof TokenizerError || e instanceof ConvertError) throw e;
    throw e;
  }
}

/**
 * Converts a Hugging Face checkpoint (+ predictors) into a PowerInfer GGUF file, streaming
 * tensor by tensor to a temporary file that is renamed when complete.
 *
 * @param modelDir Hugging Face model directory.
 * @param outFile Output path.
 * @param options Output type, dense mode, predictor directory, progress callback.
 * @returns Architecture, tensor count and bytes written.
 * @throws {ConvertError} See {@link planConversion}.
 *
 * @example Converting a directory without config.json fails clearly
 * ```ts
 * import { rejects } from "node:assert/strict";
 * import { ConvertError } from "../errors.ts";
 * import { convertModel } from "./convert.ts";
 * const dir = await Deno.makeTempDir();
 * await rejects(convertModel(dir, `${dir}/out.gguf`), ConvertError);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function convertModel(
  modelDir: string,
  outFile: string,
  options: ConvertOptions & { onProgress?: GgufWriteProgress } = {},
): Promise<{ arch: string; nTensors: number; byteLength: number }> {
  checkOutFileIsNotInput(outFile, modelDir, options.predictorDir);
  using plan = planConversion(modelDir, options);
  await writeGguf(outFile, {
    magic: plan.magic,
    metadata: plan.metadata,
    tensors: plan.tensors,
  }, { onProgress: options.onProgress });
  const byteLength = (await Deno.stat(outFile)).size;
  return { arch: plan.arch, nTensors: plan.tensors.length, byteLength };
}
