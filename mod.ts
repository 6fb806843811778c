/**
 * powerinfer-deno: run ReLU-sparse LLMs locally with PowerInfer's hot/cold neuron split, from
 * Deno. Read and write GGUF / PowerInfer GGUF, tokenize, generate, quantize, build GPU indexes.
 *
 * @module
 */

export * from "./src/errors.ts";
export * from "./src/gguf/types.ts";
export { DEFAULT_SAMPLING, Mt19937, Sampler, type SamplingParams } from "./src/sampling.ts";
