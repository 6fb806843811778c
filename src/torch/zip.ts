/**
 * Minimal ZIP reader for PyTorch checkpoints (`torch.save` writes an uncompressed zip, often with
 * ZIP64 records once a file passes 4 GiB). Stored and deflated entries are supported; every
 * length is checked against the file before anything is allocated.
 *
 * @module
 */

import { inflateRawSync } from "node:zlib";
import { CheckpointFormatError } from "../errors.ts";
import { type ByteSource, bytesSource } from "./source.ts";

/** One member of a zip archive, as its central directory describes it. */
export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate. */
  method: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
  crc32: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const EOCD_BYTES = 22;
const MAX_COMMENT_BYTES = 0xffff;

function u64(view: DataView, at: number, what: string): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CheckpointFormatError(`Zip ${what} ${v} is too large`);
  }
  return Number(v);
}

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A zip archive over a random-access source; entries are read on demand. */
export class ZipArchive {
  readonly source: ByteSource;
  /** Entries by name, in central-directory order. */
  readonly entries: ReadonlyMap<string, ZipEntry>;

  private constructor(source: ByteSource, entries: Map<string, ZipEntry>) {
    this.source = source;
    this.entries = entries;
  }

  /**
   * Parses the central directory of a zip archive.
   *
   * @param input The whole archive in memory, or a ByteSource.
   * @returns The archive with its entry table.
   * @throws {CheckpointFormatError} If the archive is not a zip file or is inconsistent.
   */
  static open(input: Uint8Array | ByteSource): ZipArchive {
    const source = input instanceof Uint8Array ? bytesSource(input) : input;
    const size = source.byteLength;
    if (size < EOCD_BYTES) {
      throw new CheckpointFormatError(`Not a zip archive: ${size} bytes is too short`);
    }
    // The end-of-central-directory record sits in the last 22 + comment bytes.
    const tailLength = Math.min(size, EOCD_BYTES + MAX_COMMENT_BYTES);
    const tailStart = size - tailLength;
    const tail = source.read(tailStart, tailLength);
    const tv = dataView(tail);
    let eocd = -1;
    for (let i = tailLength - EOCD_BYTES; i >= 0; i--) {
      if (tv.getUint32(i, true) === SIG_EOCD) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) {
      throw new CheckpointFormatError("Not a zip archive: no end-of-central-directory record");
    }
    let nEntries = tv.getUint16(eocd + 10, true);
    let cdSize = tv.getUint32(eocd + 12, true);
    let cdOffset = tv.getUint32(eocd + 16, true);
    if (nEntries === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      // ZIP64: a locator 20 bytes before the EOCD points at the ZIP64 EOCD record.
      const locAt = tailStart + eocd - 20;
      if (locAt < 0) throw new CheckpointFormatError("Zip64 locator is missing");
      const loc = dataView(source.read(locAt, 20));
      if (loc.getUint32(0, true) !== SIG_EOCD64_LOCATOR) {
        throw new CheckpointFormatError("Zip64 locator is missing");
      }
      const recAt = u64(loc, 8, "ZIP64 record offset");
      const rec = dataView(source.read(recAt, 56));
      if (rec.getUint32(0, true) !== SIG_EOCD64) {
        throw new CheckpointFormatError(`Zip64 end record not found at byte ${recAt}`);
      }
      nEntries = u64(rec, 32, "entry count");
      cdSize = u64(rec, 40, "central directory size");
      cdOffset = u64(rec, 48, "central directory offset");
    }
    if (cdOffset + cdSize > size) {
      throw new CheckpointFormatError(
        `Zip central directory [${cdOffset}, ${cdOffset + cdSize}) is outside the ${size} bytes`,
      );
    }
    // Each central record is at least 46 bytes: a lying entry count cannot make us loop long.
    if (nEntries * 46 > cdSize) {
      throw new CheckpointFormatError(
        `Zip claims ${nEntries} entries in a ${cdSize}-byte central directory`,
      );
    }
    const cd = source.read(cdOffset, cdSize);
    const cv = dataView(cd);
    const entries = new Map<string, ZipEntry>();
    const decoder = new TextDecoder();
    let at = 0;
    for (let i = 0; i < nEntries; i++) {
      if (at + 46 > cdSize || cv.getUint32(at, true) !== SIG_CENTRAL) {
        throw new CheckpointFormatError(`Zip central record ${i} is malformed (at byte ${at})`);
      }
      const flags = cv.getUint16(at + 8, true);
      const method = cv.getUint16(at + 10, true);
      const crc32 = cv.getUint32(at + 16, true);
      let compressedSize = cv.getUint32(at + 20, true);
      let uncompressedSize = cv.getUint32(at + 24, true);
      const nameLength = cv.getUint16(at + 28, true);
      const extraLength = cv.getUint16(at + 30, true);
      const commentLength = cv.getUint16(at + 32, true);
      let localHeaderOffset = cv.getUint32(at + 42, true);
      const end = at + 46 + nameLength + extraLength + commentLength;
      if (end > cdSize) {
        throw new CheckpointFormatError(`Zip central record ${i} runs past the directory`);
      }
      const name = decoder.decode(cd.subarray(at + 46, at + 46 + nameLength));
      // ZIP64 extended information: 64-bit values for each field that holds 0xffffffff.
      let x = at + 46 + nameLength;
      const xEnd = x + extraLength;
      while (x + 4 <= xEnd) {
        const id = cv.getUint16(x, true);
        const len = cv.getUint16(x + 2, true);
        if (x + 4 + len > xEnd) break;
        if (id === 0x0001) {
          let p = x + 4;
          const take = (what: string): number => {
            if (p + 8 > x + 4 + len) {
              throw new CheckpointFormatError(`Zip64 extra field of "${name}" is too short`);
            }
            const v = u64(cv, p, what);
            p += 8;
            return v;
          };
          if (uncompressedSize === 0xffffffff) uncompressedSize = take("size");
          if (compressedSize === 0xffffffff) compressedSize = take("compressed size");
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = take("header offset");
        }
        x += 4 + len;
      }
      if (flags & 1) throw new CheckpointFormatError(`Zip entry "${name}" is encrypted`);
      if (localHeaderOffset + 30 + compressedSize > size) {
        throw new CheckpointFormatError(
          `Zip entry "${name}" (${compressedSize} bytes at ${localHeaderOffset}) runs past the ${size}-byte file`,
        );
      }
      entries.set(name, {
        name,
        method,
        compressedSize,
        uncompressedSize,
        localHeaderOffset,
        crc32,
      });
      at = end;
    }
    return new ZipArchive(source, entries);
  }

  /** Offset of an entry's data (after its local header) and its stored length. */
  dataRange(entry: ZipEntry): { offsetBytes: number; byteLength: number } {
    const size = this.source.byteLength;
    const lh = dataView(this.source.read(entry.localHeaderOffset, 30));
    if (lh.getUint32(0, true) !== SIG_LOCAL) {
      throw new CheckpointFormatError(
        `Zip entry "${entry.name}" has no local header at byte ${entry.localHeaderOffset}`,
      );
    }
    const offsetBytes = entry.localHeaderOffset + 30 + lh.getUint16(26, true) +
      lh.getUint16(28, true);
    if (offsetBytes + entry.compressedSize > size) {
      throw new CheckpointFormatError(
        `Zip entry "${entry.name}" data [${offsetBytes}, ${
          offsetBytes + entry.compressedSize
        }) is outside the ${size}-byte file`,
      );
    }
    return { offsetBytes, byteLength: entry.compressedSize };
  }

  /**
   * The uncompressed bytes of an entry (a view into the source for stored entries in memory).
   *
   * @param name Entry name.
   * @param range Optional byte range of the uncompressed data (stored entries read only that).
   * @returns The bytes.
   * @throws {CheckpointFormatError} If the entry is missing, corrupt or uses another method.
   */
  read(name: string, range?: { offsetBytes: number; byteLength: number }): Uint8Array {
    const entry = this.entries.get(name);
    if (!entry) throw new CheckpointFormatError(`Zip entry "${name}" is missing`);
    const data = this.dataRange(entry);
    const want = range ?? { offsetBytes: 0, byteLength: entry.uncompressedSize };
    if (
      want.offsetBytes < 0 || want.byteLength < 0 ||
      want.offsetBytes + want.byteLength > entry.uncompressedSize
    ) {
      throw new CheckpointFormatError(
        `Zip entry "${name}" holds ${entry.uncompressedSize} bytes: cannot read [${want.offsetBytes}, ${
          want.offsetBytes + want.byteLength
        })`,
      );
    }
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.uncompressedSize) {
        throw new CheckpointFormatError(
          `Stored zip entry "${name}" has sizes ${entry.compressedSize} and ${entry.uncompressedSize}`,
        );
      }
      return this.source.read(data.offsetBytes + want.offsetBytes, want.byteLength);
    }
    if (entry.method === 8) {
      // Deflate expands at most ~1032:1; a larger claim is a lie, refused before allocating.
      if (entry.uncompressedSize > entry.compressedSize * 1032 + 1024) {
        throw new CheckpointFormatError(
          `Zip entry "${name}" claims ${entry.uncompressedSize} bytes from ${entry.compressedSize} deflated bytes`,
        );
      }
      const packed = this.source.read(data.offsetBytes, data.byteLength);
      let out: Uint8Array;
      try {
        out = new Uint8Array(
          inflateRawSync(packed, { maxOutputLength: Math.max(1, entry.uncompressedSize) }),
        );
      } catch (cause) {
        throw new CheckpointFormatError(`Zip entry "${name}" does not inflate`, { cause });
      }
      if (out.byteLength !== entry.uncompressedSize) {
        throw new CheckpointFormatError(
          `Zip entry "${name}" inflates to ${out.byteLength} bytes: expected ${entry.uncompressedSize}`,
        );
      }
      return out.subarray(want.offsetBytes, want.offsetBytes + want.byteLength);
    }
    throw new CheckpointFormatError(
      `Zip entry "${name}" uses compression method ${entry.method}: expected 0 (stored) or 8 (deflate)`,
    );
  }
}
