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
