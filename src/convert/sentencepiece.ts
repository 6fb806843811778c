/**
 * SentencePiece `tokenizer.model` reader (a `ModelProto` protobuf): the pieces with their scores
 * and types, plus the trainer and normalizer settings a tokenizer needs (model type,
 * byte_fallback, special ids, add_dummy_prefix, ...). Every length is checked against the
 * buffer.
 *
 * @module
 */

import { TokenizerError } from "../errors.ts";
import { TokenType } from "../tokenizer/vocab.ts";

/** SentencePiece piece types: the same numbers as GGUF token types, so the same enum. */
export { TokenType as SpmPieceType };

/** One vocabulary entry. */
export interface SpmPiece {
  piece: string;
  score: number;
  type: TokenType;
}

/** The parts of a SentencePiece model a converter or tokenizer uses. */
export interface SentencePieceModel {
  pieces: SpmPiece[];
  trainer: {
    /** 1 unigram, 2 BPE, 3 word, 4 char. */
    modelType: number;
    vocabSize?: number;
    byteFallback: boolean;
    splitDigits: boolean;
    unkId: number;
    bosId: number;
    eosId: number;
    padId: number;
  };
  normalizer: {
    name?: string;
    addDummyPrefix: boolean;
    removeExtraWhitespaces: boolean;
    escapeWhitespaces: boolean;
  };
}

/** A protobuf reader over one message's bytes. */
class Proto {
  pos = 0;
  constructor(readonly bytes: Uint8Array, readonly what: string) {}

  fail(msg: string): never {
    throw new TokenizerError(`${this.what}: ${msg} (at byte ${this.pos})`);
  }

  get done(): boolean {
    return this.pos >= this.bytes.length;
  }

  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.bytes.length) this.fail("truncated varint");
      const b = this.bytes[this.pos++]!;
      if (mul < 2 ** 53) result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return result;
      mul *= 128;
    }
    return this.fail("varint longer than 10 bytes");
  }

  bytesField(): Uint8Array {
    const n = this.varint();
    if (n > this.bytes.length - this.pos) {
      this.fail(`field of ${n} bytes runs past the ${this.bytes.length}-byte message`);
    }
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  fixed32(): DataView {
    if (this.pos + 4 > this.bytes.length) this.fail("truncated fixed32");
    const v = new DataView(this.bytes.buffer, this.bytes.byteOffset + this.pos, 4);
    this.pos += 4;
    return v;
  }

  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        if (this.pos + 8 > this.bytes.length) this.fail("truncated fixed64");
        this.pos += 8;
        return;
      case 2:
        this.bytesField();
        return;
      case 5:
        this.fixed32();
        return;
    }
    this.fail(`unsupported wire type ${wire}`);
  }

  /** Calls `fn(field, wire)` for each field; `fn` returns false to have it skipped. */
  each(fn: (field: number, wire: number) => boolean): void {
    while (!this.done) {
      const key = this.varint();
      const field = Math.floor(key / 8);
      const wire = key & 7;
      if (field === 0) this.fail("field number 0");
      if (!fn(field, wire)) this.skip(wire);
    }
  }

  expect(wire: number, want: number, field: string): void {
    if (wire !== want) this.fail(`field ${field} has wire type ${wire}: expected ${want}`);
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function text(p: Proto, raw: Uint8Array, field: string): string {
  try {
    return utf8.decode(raw);
  } catch {
    return p.fail(`${field} is not valid UTF-8`);
  }
}

/**
 * Parses a SentencePiece `tokenizer.model`.
 *
 * @param bytes The file.
 * @returns Pieces (in id order) and settings.
 * @throws {TokenizerError} If the protobuf is truncated or malformed, or holds no pieces.
 *
 * @example Garbage is rejected with a typed error
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { TokenizerError } from "../errors.ts";
 * import { parseSentencePieceModel } from "./sentencepiece.ts";
 * throws(() => parseSentencePieceModel(new Uint8Array([0x0a, 0x50, 1])), TokenizerError);
 * ```
 */
export function parseSentencePieceModel(bytes: Uint8Array): SentencePieceModel {
  const what = "SentencePiece model";
  const top = new Proto(bytes, what);
  const model: SentencePieceModel = {
    pieces: [],
    trainer: {
      modelType: 1,
      byteFallback: false,
      splitDigits: false,
      unkId: 0,
      bosId: 1,
      eosId: 2,
      padId: -1,
    },
    normalizer: { addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true },
  };
  const int32 = (v: number) => (v >= 2 ** 31 ? v - 2 ** 64 : v); // negative int32 = 10-byte varint
  top.each((field, wire) => {
    if (field === 1) {
      top.expect(wire, 2, "pieces");
      const p = new Proto(top.bytesField(), `${what} piece ${model.pieces.length}`);
      const piece: SpmPiece = { piece: "", score: 0, type: TokenType.NORMAL };
      p.each((f, w) => {
        if (f === 1) {
          p.expect(w, 2, "piece");
          piece.piece = text(p, p.bytesField(), "piece");
        } else if (f === 2) {
          p.expect(w, 5, "score");
          piece.score = p.fixed32().getFloat32(0, true);
        } else if (f === 3) {
          p.expect(w, 0, "type");
          const t = p.varint();
          if (t < 1 || t > 6) p.fail(`piece type ${t}: expected 1..6`);
          piece.type = t;
        } else return false;
        return true;
      });
      model.pieces.push(piece);
      return true;
    }
    if (field === 2 && wire === 2) {
      const p = new Proto(top.bytesField(), `${what} trainer_spec`);
      const t = model.trainer;
      p.each((f, w) => {
        if (w !== 0) return false;
        const v = p.varint();
        if (f === 3) t.modelType = v;
        else if (f === 4) t.vocabSize = v;
        else if (f === 25) t.splitDigits = v !== 0;
        else if (f === 35) t.byteFallback = v !== 0;
        else if (f === 40) t.unkId = int32(v);
        else if (f === 41) t.bosId = int32(v);
        else if (f === 42) t.eosId = int32(v);
        else if (f === 43) t.padId = int32(v);
        return true;
      });
      return true;
    }
    if (field === 3 && wire === 2) {
      const p = new Proto(top.bytesField(), `${what} normalizer_spec`);
      const n = model.normalizer;
      p.each((f, w) => {
        if (f === 1 && w === 2) n.name = text(p, p.bytesField(), "name");
        else if (w === 0 && f === 3) n.addDummyPrefix = p.varint() !== 0;
        else if (w === 0 && f === 4) n.removeExtraWhitespaces = p.varint() !== 0;
        else if (w === 0 && f === 5) n.escapeWhitespaces = p.varint() !== 0;
        else return false;
        return true;
      });
      return true;
    }
    return false;
  });
  if (model.pieces.length === 0) throw new TokenizerError(`${what} holds no pieces`);
  return model;
}
