/**
 * Every error class of powerinfer-deno. Messages say what was expected and what was found,
 * start upper case and have no trailing period.
 *
 * @module
 */

/** Base class of every error this toolkit throws on purpose. */
export class PowerInferError extends Error {
  override name = "PowerInferError";
}

/** A GGUF/PWRI file is malformed; `offset` is the byte where the problem was found. */
export class GgufFormatError extends PowerInferError {
  override name = "GgufFormatError";
  constructor(message: string, readonly offset: number, options?: ErrorOptions) {
    super(`${message} (at byte ${offset})`, options);
  }
}

/** A tokenizer vocabulary is missing or inconsistent, or text cannot be tokenized. */
export class TokenizerError extends PowerInferError {
  override name = "TokenizerError";
}

/** Model hyperparameters or tensors are missing, mistyped or inconsistent. */
export class ModelConfigError extends PowerInferError {
  override name = "ModelConfigError";
}

/** The native kernel library cannot be found, loaded, or has the wrong ABI. */
export class NativeLibraryError extends PowerInferError {
  override name = "NativeLibraryError";
}

/** A native kernel returned a non-OK status. */
export class KernelError extends PowerInferError {
  override name = "KernelError";
  constructor(message: string, readonly status: number, options?: ErrorOptions) {
    super(message, options);
  }
}

/** A file could not be mapped or read. */
export class MappedFileError extends PowerInferError {
  override name = "MappedFileError";
}

/** An output file could not be written (missing directory, a directory in the way, no permission). */
export class FileWriteError extends PowerInferError {
  override name = "FileWriteError";
}

/** Quantization was asked for something it cannot do. */
export class QuantizeError extends PowerInferError {
  override name = "QuantizeError";
}

/** A PyTorch zip/pickle, safetensors or other checkpoint file is malformed or unsupported. */
export class CheckpointFormatError extends PowerInferError {
  override name = "CheckpointFormatError";
}

/** Converting a Hugging Face checkpoint failed (unsupported architecture, missing tensor...). */
export class ConvertError extends PowerInferError {
  override name = "ConvertError";
}

/** GPU-index generation failed (missing statistics, impossible budget...). */
export class GpuIndexError extends PowerInferError {
  override name = "GpuIndexError";
}

/** Generation failed (context exceeded, bad sampling parameters...). */
export class GenerationError extends PowerInferError {
  override name = "GenerationError";
}
