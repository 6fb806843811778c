/**
 * Writes 1-D tensors as PyTorch `.pt` files (what `torch.save(tensor, "activation_N.pt")` makes,
 * spec gpu-index.md §1.1), so statistics from `deno task profile` can also feed PowerInfer's own
 * Python solver. A zip archive of stored (uncompressed) entries `<name>/data.pkl`,
 * `<name>/byteorder`, `<name>/data/0`, `<name>/version`, each entry's data aligned to 64 bytes
 * through a padding extra field as PyTorch does; the pickle is protocol 2 calling
 * `torch._utils._rebuild_tensor_v2` on a `LongStorage` (integer counts) or `DoubleStorage`.
 *
 * @module
 */

const encoder = new TextEncoder();

let crcTable: Uint32Array | undefined;
function crc32(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Pickle (protocol 2) of `_rebuild_tensor_v2(storage, 0, (n,), (1,), False, OrderedDict())`. */
function tensorPickle(storageKind: string, n: number): Uint8Array {
  const out: number[] = [];
  const str = (s: string) => out.push(...encoder.encode(s));
  const unicode = (s: string) => {
    const b = encoder.encode(s);
    out.push(
      0x58,
      b.length & 0xff,
      (b.length >> 8) & 0xff,
      (b.length >> 16) & 0xff,
      b.length >>> 24,
    );
    out.push(...b);
  };
  const int = (v: number) => {
    if (v < 0x100) out.push(0x4b, v); // BININT1
    else if (v < 0x10000) out.push(0x4d, v & 0xff, v >> 8); // BININT2
    else out.push(0x4a, v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff); // BININT
  };
  out.push(0x80, 0x02); // PROTO 2
  str("ctorch._utils\n_rebuild_tensor_v2\n");
  out.push(0x28, 0x28); // MARK MARK
  unicode("storage");
  str(`ctorch\n${storageKind}\n`);
  unicode("0");
  unicode("cpu");
  int(n);
  out.push(0x74, 0x51); // TUPLE BINPERSID
  int(0); // storage offset
  int(n);
  out.push(0x85); // TUPLE1 size
  int(1);
  out.push(0x85); // TUPLE1 stride
  out.push(0x89); // NEWFALSE requires_grad
  str("ccollections\nOrderedDict\n");
  out.push(0x29, 0x52); // EMPTY_TUPLE REDUCE
  out.push(0x74, 0x52, 0x2e); // TUPLE REDUCE STOP
  return Uint8Array.from(out);
}

/**
 * Encodes `values` as a `.pt` file holding one 1-D tensor: int64 when every value is an integer
 * (activation counts), float64 otherwise.
 *
 * @param values The tensor's elements.
 * @param name The archive's top directory (PyTorch uses the file's base name, e.g. `activation_0`).
 * @returns The file bytes.
 * @throws {RangeError} If the tensor has 2^31 or more elements or a value is not finite.
 *
 * @example Our reader reads it back
 * ```ts
 * import { deepStrictEqual } from "node:assert/strict";
 * import { readActivationPt } from "./stats.ts";
 * import { torchSave1d } from "./torch_save.ts";
 * deepStrictEqual([...readActivationPt(torchSave1d([3, 0, 9], "activation_0"))], [3, 0, 9]);
 * ```
 */
export function torchSave1d(values: ArrayLike<number>, name: string): Uint8Array {
  const n = values.length;
  if (n >= 2 ** 31) throw new RangeError(`Tensor of ${n} elements is too large`);
  let integral = true;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v)) throw new RangeError(`Value ${v} at ${i} is not finite`);
    if (!Number.isSafeInteger(v)) integral = false;
  }
  const data = new Uint8Array(n * 8);
  const dv = new DataView(data.buffer);
  for (let i = 0; i < n; i++) {
    if (integral) dv.setBigInt64(i * 8, BigInt(values[i]!), true);
    else dv.setFloat64(i * 8, values[i]!, true);
  }
  return zipStored([
    [`${name}/data.pkl`, tensorPickle(integral ? "LongStorage" : "DoubleStorage", n)],
    [`${name}/byteorder`, encoder.encode("little")],
    [`${name}/data/0`, data],
    [`${name}/version`, encoder.encode("3\n")],
  ]);
}

/** A zip archive of stored entries, each entry's data starting at a multiple of 64. */
function zipStored(entries: [string, Uint8Array][]): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const nameBytes = encoder.encode(name);
    const crc = crc32(data);
    // Extra field "FB" of 'Z' padding so the data starts at a multiple of 64 (like PyTorch).
    const pad = (64 - ((offset + 30 + nameBytes.length + 4) % 64)) % 64;
    const extra = new Uint8Array(4 + pad);
    extra.set([0x46, 0x42, pad & 0xff, pad >> 8]);
    extra.fill(0x5a, 4);
    const local = new Uint8Array(30 + nameBytes.length + extra.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true); // version needed
    lv.setUint16(6, 0, true); // flags
    lv.setUint16(8, 0, true); // stored
    lv.setUint32(14, crc, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, nameBytes.length, true);
    lv.setUint16(28, extra.length, true);
    local.set(nameBytes, 30);
    local.set(extra, 30 + nameBytes.length);
    const cen = new Uint8Array(46 + nameBytes.length);
    const cv = new DataView(cen.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, nameBytes.length, true);
    cv.setUint32(42, offset, true);
    cen.set(nameBytes, 46);
    parts.push(local, data);
    central.push(cen);
    offset += local.length + data.length;
  }
  const centralBytes = central.reduce((a, c) => a + c.length, 0);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, centralBytes, true);
  ev.setUint32(16, offset, true);
  const out = new Uint8Array(offset + centralBytes + 22);
  let p = 0;
  for (const part of [...parts, ...central, end]) {
    out.set(part, p);
    p += part.length;
  }
  return out;
}
