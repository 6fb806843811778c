/**
 * Fuzz targets of the converter's readers (registered in tasks/fuzz_targets.ts): torch zip
 * checkpoints, safetensors, SentencePiece tokenizer.model and tokenizer.json. Each corrupt input
 * must parse or throw a PowerInferError subclass (CheckpointFormatError / TokenizerError).
 *
 * @module
 */

import { fileURLToPath as fromFileUrl } from "node:url";
import type { FuzzField, FuzzInput, FuzzTarget } from "../../tasks/fuzz_targets.ts";
import { parseHfTokenizerJson } from "./hf_tokenizer.ts";
import { SafetensorsFile } from "./safetensors.ts";
import { parseSentencePieceModel } from "./sentencepiece.ts";
import { readTorchFile } from "../torch/torch.ts";
import { ZipArchive } from "../torch/zip.ts";

function shared(path: string): string {
  return fromFileUrl(new URL(`../../../shared/fixtures/${path}`, import.meta.url));
}

/** Offsets of the size/offset/count fields of a valid zip (EOCD, central and local headers). */
function zipFields(bytes: Uint8Array): FuzzField[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const zip = ZipArchive.open(bytes);
  let eocd = bytes.length - 22;
  while (eocd > 0 && dv.getUint32(eocd, true) !== 0x06054b50) eocd--;
  const fields: FuzzField[] = [
    { offset: eocd + 8, width: 4 },
    { offset: eocd + 12, width: 4 },
    { offset: eocd + 16, width: 4 },
  ];
  let p = dv.getUint32(eocd + 16, true);
  for (const e of zip.entries.values()) {
    for (const o of [20, 24, 28, 42]) fields.push({ offset: p + o, width: 4 });
    fields.push({ offset: e.localHeaderOffset + 26, width: 4 });
    p += 46 + dv.getUint16(p + 28, true) + dv.getUint16(p + 30, true) + dv.getUint16(p + 32, true);
  }
  return fields;
}

async function torchInput(path: string): Promise<FuzzInput> {
  const bytes = await Deno.readFile(shared(path));
  // The pickle is the first entry: most mutations land in it.
  const zip = ZipArchive.open(bytes);
  const pkl = [...zip.entries.values()].find((e) => e.name.endsWith("data.pkl"))!;
  return {
    name: path,
    bytes,
    focusBytes: 64 + pkl.compressedSize + pkl.name.length,
    fields: zipFields(bytes),
  };
}

/** torch zip + pickle reader. */
export const TORCH_FUZZ_TARGET: FuzzTarget = {
  name: "torch",
  async corpus() {
    return [
      await torchInput("models/tiny/activation/activation_0.pt"),
      await torchInput("models/tiny/predictor/model_1.pt"),
    ];
  },
  check(bytes) {
    readTorchFile(bytes);
  },
};

function safetensorsBytes(): Uint8Array {
  const header = JSON.stringify({
    __metadata__: { format: "pt" },
    "model.embed_tokens.weight": { dtype: "F32", shape: [4, 2], data_offsets: [0, 32] },
    "model.norm.weight": { dtype: "BF16", shape: [2], data_offsets: [32, 36] },
    "lm_head.weight": { dtype: "F16", shape: [4, 2], data_offsets: [36, 52] },
  });
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + 52);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  for (let i = 0; i < 52; i++) out[8 + h.length + i] = i * 7;
  return out;
}

/** safetensors header reader. */
export const SAFETENSORS_FUZZ_TARGET: FuzzTarget = {
  name: "safetensors",
  corpus() {
    const bytes = safetensorsBytes();
    return Promise.resolve([{
      name: "synthetic",
      bytes,
      focusBytes: bytes.length,
      fields: [{ offset: 0, width: 8 }, { offset: 0, width: 4 }],
    }]);
  },
  check(bytes) {
    const f = SafetensorsFile.open(bytes);
    for (const t of f.tensors.values()) {
      if (t.load().data.length !== t.byteLength) throw new Error(`${t.name}: wrong length`);
    }
  },
};

/** The first `keep` pieces of a SentencePiece model plus its trainer and normalizer specs. */
function trimSentencePiece(bytes: Uint8Array, keep: number): Uint8Array {
  const parts: Uint8Array[] = [];
  let pos = 0;
  let pieces = 0;
  const varint = () => {
    let v = 0, mul = 1;
    for (;;) {
      const b = bytes[pos++]!;
      v += (b & 0x7f) * mul;
      if (!(b & 0x80)) return v;
      mul *= 128;
    }
  };
  while (pos < bytes.length) {
    const start = pos;
    const key = varint();
    if ((key & 7) !== 2) throw new Error("unexpected wire type in fixture");
    const n = varint();
    pos += n;
    if (key >> 3 === 1 && pieces++ >= keep) continue;
    parts.push(bytes.subarray(start, pos));
  }
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** SentencePiece tokenizer.model reader. */
export const SENTENCEPIECE_FUZZ_TARGET: FuzzTarget = {
  name: "sentencepiece",
  async corpus() {
    const bytes = trimSentencePiece(
      await Deno.readFile(shared("models/tiny/hf/tokenizer.model")),
      300,
    );
    return [{ name: "tiny tokenizer.model (300 pieces)", bytes, focusBytes: bytes.length }];
  },
  check(bytes) {
    parseSentencePieceModel(bytes);
  },
};

/** HF tokenizer.json reader. */
export const TOKENIZER_JSON_FUZZ_TARGET: FuzzTarget = {
  name: "tokenizer.json",
  corpus() {
    const bytes = new TextEncoder().encode(JSON.stringify({
      version: "1.0",
      added_tokens: [{ id: 4, content: "<|endoftext|>", special: true }],
      model: {
        type: "BPE",
        vocab: { "a": 0, "b": 1, "ab": 2, "Ġa": 3 },
        merges: ["a b", "Ġ a"],
      },
    }));
    return Promise.resolve([{ name: "synthetic", bytes, focusBytes: bytes.length }]);
  },
  check(bytes) {
    parseHfTokenizerJson(new TextDecoder().decode(bytes));
  },
};

/** Every converter target, in registration order. */
export const CONVERT_FUZZ_TARGETS: FuzzTarget[] = [
  TORCH_FUZZ_TARGET,
  SAFETENSORS_FUZZ_TARGET,
  SENTENCEPIECE_FUZZ_TARGET,
  TOKENIZER_JSON_FUZZ_TARGET,
];
