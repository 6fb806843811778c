/**
 * powerinfer-deno: run ReLU-sparse LLMs locally with PowerInfer's hot/cold neuron split, from
 * Deno. Read and write GGUF / PowerInfer GGUF, tokenize, generate, quantize, build GPU indexes.
 *
 * @module
 */

export * from "./src/errors.ts";
export * from "./src/gguf/types.ts";
export * from "./src/gguf/reader.ts";
export * from "./src/gguf/writer.ts";
export * from "./src/gguf/open.ts";
export { DEFAULT_SAMPLING, Mt19937, Sampler, type SamplingParams } from "./src/sampling.ts";
export {
  type DecodeOptions,
  type EncodeOptions,
  loadTokenizer,
  type StreamDecoder,
  type Tokenizer,
  tokenizerFromGguf,
  VocabTokenizer,
} from "./src/tokenizer/tokenizer.ts";
export { loadVocab, type LoadVocabOptions, TokenType, type Vocab } from "./src/tokenizer/vocab.ts";
export {
  openTorchCheckpoint,
  openTorchStateDict,
  readTorchFile,
  readTorchStateDict,
  readTorchTensor,
  TORCH_DTYPE_BYTES,
  type TorchDType,
  type TorchTensor,
  TorchTensorRef,
} from "./src/torch/torch.ts";
export { type ByteSource, bytesSource, FileSource } from "./src/torch/source.ts";
export {
  type ConversionPlan,
  convertModel,
  type ConvertOptions,
  type ConvertOutType,
  planConversion,
} from "./src/convert/convert.ts";
export { SafetensorsFile, type SafetensorsTensorRef } from "./src/convert/safetensors.ts";
export {
  parseSentencePieceModel,
  type SentencePieceModel,
  type SpmPiece,
  SpmPieceType,
} from "./src/convert/sentencepiece.ts";
export { type HfTokenizerJson, parseHfTokenizerJson } from "./src/convert/hf_tokenizer.ts";
export {
  type GeneratedToken,
  type GenerateOptions,
  loadModel,
  type LoadModelOptions,
  Model,
  type ModelTimings,
} from "./src/model/model.ts";
export {
  type ModelArch,
  type ModelConfig,
  readModelConfig,
  sparseThreshold,
} from "./src/model/config.ts";
export type {
  ActivationKind,
  AttentionArgs,
  Backend,
  HotFfn,
  KvLayer,
  KvType,
  RopeMode,
  SparseArgs,
  WeightTensor,
} from "./src/backend/backend.ts";
export { CpuBackend, type CpuBackendOptions } from "./src/backend/cpu.ts";
export { MappedFile } from "./ffi/mapped_file.ts";
export { getThreads, physicalCores, setThreads } from "./ffi/ops.ts";
export { dequantizeF16, fp16FromF32, fp16ToF32, quantizeF16 } from "./src/quant/f16.ts";
export { BLOCK_Q4_0_BYTES, dequantizeQ4_0, QK4_0, quantizeQ4_0 } from "./src/quant/q4_0.ts";
export { BLOCK_Q5_0_BYTES, dequantizeQ5_0, QK5_0, quantizeQ5_0 } from "./src/quant/q5_0.ts";
export {
  BLOCK_Q8_0_BYTES,
  dequantizeQ8_0,
  QK8_0,
  quantizeQ8_0,
  quantizeQ8_0Activation,
} from "./src/quant/q8_0.ts";
export { BLOCK_Q6_K_BYTES, dequantizeQ6_K, QK_K, quantizeQ6_K } from "./src/quant/q6_k.ts";
export { BLOCK_Q8_K_BYTES, dequantizeQ8_K, quantizeQ8_K } from "./src/quant/q8_k.ts";
export type { QuantizeOptions } from "./src/quant/common.ts";
export { dequantize, quantize, REFERENCE_TYPES } from "./src/quant/quantize.ts";
export {
  parseQuantizeTarget,
  planQuantization,
  QUANTIZATION_VERSION,
  QUANTIZE_FTYPES,
  quantizedMetadata,
  quantizeModel,
  type QuantizeModelOptions,
  type QuantizePlanEntry,
  type QuantizePlanOptions,
  type QuantizeProgress,
  type QuantizeSummary,
  type QuantizeTarget,
} from "./src/quant/quantize_model.ts";
export {
  capacityFromBudget,
  DEFAULT_GPU_INDEX_BATCH,
  type DenseItem,
  type GpuBudget,
  type GpuIndexProblem,
  type GpuIndexSolution,
  solveGpuIndex,
} from "./src/gpu_index/solve.ts";
export {
  type GpuIndex,
  type GpuIndexLayer,
  gpuIndexLayer,
  gpuIndexPathFor,
  readGpuIndex,
  serializeGpuIndex,
  writeGpuIndex,
} from "./src/gpu_index/gpuidx.ts";
export {
  ACTIVATION_JSON,
  type ActivationStats,
  formatActivationJson,
  parseActivationJson,
  readActivationDir,
  readActivationPt,
} from "./src/gpu_index/stats.ts";
export { denseItems, modelBudget, neuronByteCost } from "./src/gpu_index/budget.ts";
export { formatPlan, type GpuIndexPlan, planGpuIndex, planToJson } from "./src/gpu_index/plan.ts";
export {
  type GpuIndexDecision,
  gpuIndexForLoad,
  type GpuIndexLoadOptions,
  type GpuIndexPolicyOptions,
  resolveGpuIndex,
} from "./src/gpu_index/policy.ts";
export { torchSave1d } from "./src/gpu_index/torch_save.ts";
export { profileActivations, type ProfileOptions } from "./src/gpu_index/profile.ts";
export { TsHotFfn } from "./src/gpu_index/ts_hot_ffn.ts";
export {
  makeModel,
  type MakeModelOptions,
  type MakeModelResult,
  MODEL_SHAPES,
  type ModelShape,
  modelShape,
} from "./src/bench/make_model.ts";
