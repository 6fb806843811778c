// Torch checkpoint reader (src/torch/): zip container, pickle subset, tensors, typed errors.
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { deflateRawSync } from "node:zlib";
import {
  CheckpointFormatError,
  FileSource,
  openTorchStateDict,
  readTorchFile,
  readTorchStateDict,
  readTorchTensor,
  type TorchTensor,
} from "../mod.ts";
import { ZipArchive } from "../src/torch/zip.ts";
import { seededRandom, sharedFixture } from "./_helpers.ts";

const TINY = "models/tiny";

/** Minimal GGUF tensor lookup (independent of src/gguf) to cross-check against the reference. */
function ggufTensors(
  bytes: Uint8Array,
): Map<string, { type: number; ne: number[]; data: Uint8Array }> {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 8;
  const u32 = () => (p += 4, v.getUint32(p - 4, true));
  const u64 = () => (p += 8, Number(v.getBigUint64(p - 8, true)));
  const str = () => {
    const n = u64();
    p += n;
    return new TextDecoder().decode(bytes.subarray(p - n, p));
  };
  const sizes: Record<number, number> = {
    0: 1,
    1: 1,
    2: 2,
    3: 2,
    4: 4,
    5: 4,
    6: 4,
    7: 1,
    10: 8,
    11: 8,
    12: 8,
  };
  const skip = (t: number): void => {
    if (t === 8) str();
    else if (t === 9) {
      const et = u32();
      const n = u64();
      for (let i = 0; i < n; i++) skip(et);
    } else p += sizes[t]!;
  };
  const nTensors = u64();
  const nKv = u64();
  for (let i = 0; i < nKv; i++) {
    str();
    skip(u32());
  }
  const infos: { name: string; ne: number[]; type: number; off: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const nd = u32();
    const ne = Array.from({ length: nd }, u64);
    infos.push({ name, ne, type: u32(), off: u64() });
  }
  const start = Math.ceil(p / 32) * 32;
  const out = new Map();
  for (const t of infos) {
    const n = t.ne.reduce((a, b) => a * b, 1) * (t.type === 0 ? 4 : 2);
    out.set(t.name, {
      type: t.type,
      ne: t.ne,
      data: bytes.subarray(start + t.off, start + t.off + n),
    });
  }
  return out;
}

const f32Ref = ggufTensors(await Deno.readFile(sharedFixture(`${TINY}/tiny.powerinfer.f32.gguf`)));

function f32(t: TorchTensor): Float32Array {
  return new Float32Array(t.data.slice().buffer);
}

Deno.test("readTorchTensor() reads activation_N.pt as a 1-D int64 [1024] of counts", async () => {
  const stats = JSON.parse(await Deno.readTextFile(sharedFixture(`${TINY}/stats.json`)));
  for (const layer of [0, 1]) {
    const t = readTorchTensor(
      await Deno.readFile(sharedFixture(`${TINY}/activation/activation_${layer}.pt`)),
    );
    strictEqual(t.dtype, "int64");
    deepStrictEqual(t.shape, [1024]);
    const counts = new BigInt64Array(t.data.slice().buffer);
    let sum = 0;
    for (const c of counts) {
      ok(c >= 0n && c <= 146n, `count ${c} within 0..146 tokens`);
      sum += Number(c);
    }
    // stats.json: active fraction = counts summed over neurons / (146 tokens * 1024 neurons).
    const frac = sum / (stats.measure_tokens * 1024);
    ok(Math.abs(frac - stats.per_layer[layer].active_fraction) < 1e-6, `layer ${layer}: ${frac}`);
  }
});

Deno.test("readTorchTensor() reads every shipped activation_N.pt (fortune-relu, falcon-tiny)", async () => {
  for (
    const [dir, layers, maxCount] of [["fortune-relu", 4, 1e9], [
      "models/falcon-tiny",
      2,
      135,
    ]] as const
  ) {
    for (let layer = 0; layer < layers; layer++) {
      const t = readTorchTensor(
        await Deno.readFile(sharedFixture(`${dir}/activation/activation_${layer}.pt`)),
      );
      strictEqual(t.dtype, "int64");
      deepStrictEqual(t.shape, [1024]);
      const counts = new BigInt64Array(t.data.slice().buffer);
      ok(counts.every((c) => c >= 0n && c <= BigInt(maxCount)), `${dir} layer ${layer}`);
      ok(counts.some((c) => c > 0n));
    }
  }
});

Deno.test("readTorchStateDict() reads predictor model_N.pt equal to the reference GGUF", async () => {
  for (const layer of [0, 1]) {
    const sd = readTorchStateDict(
      await Deno.readFile(sharedFixture(`${TINY}/predictor/model_${layer}.pt`)),
    );
    deepStrictEqual([...sd.keys()], ["fc1.weight", "fc2.weight"]);
    deepStrictEqual(sd.get("fc1.weight")!.shape, [32, 64]);
    deepStrictEqual(sd.get("fc2.weight")!.shape, [1024, 32]);
    for (const name of ["fc1", "fc2"]) {
      const t = sd.get(`${name}.weight`)!;
      strictEqual(t.dtype, "float32");
      deepStrictEqual(t.data, f32Ref.get(`blk.${layer}.${name}.weight`)!.data);
    }
  }
});

Deno.test("readTorchStateDict() reads pytorch_model.bin in file order with HF names", async () => {
  const bytes = await Deno.readFile(sharedFixture(`${TINY}/hf/pytorch_model.bin`));
  const sd = readTorchStateDict(bytes);
  strictEqual(sd.size, 21);
  strictEqual([...sd.keys()][0], "model.embed_tokens.weight");
  deepStrictEqual(sd.get("model.embed_tokens.weight")!.shape, [32000, 64]);
  deepStrictEqual(sd.get("lm_head.weight")!.shape, [32000, 64]);
  deepStrictEqual(sd.get("model.layers.1.mlp.down_proj.weight")!.shape, [64, 1024]);
  // Unpermuted tensors are byte-identical to PowerInfer's F32 conversion.
  deepStrictEqual(sd.get("model.embed_tokens.weight")!.data, f32Ref.get("token_embd.weight")!.data);
  deepStrictEqual(
    sd.get("model.layers.0.mlp.up_proj.weight")!.data,
    f32Ref.get("blk.0.ffn_up.weight")!.data,
  );
  deepStrictEqual(sd.get("model.norm.weight")!.data, f32Ref.get("output_norm.weight")!.data);
  // ffn_down_t is down_proj transposed: element [j, i] of ffn_down_t = down[i, j].
  const down = f32(sd.get("model.layers.0.mlp.down_proj.weight")!);
  const downT = new Float32Array(f32Ref.get("blk.0.ffn_down_t.weight")!.data.slice().buffer);
  for (let j = 0; j < 1024; j += 97) {
    for (let i = 0; i < 64; i += 7) strictEqual(downT[j * 64 + i], down[i * 1024 + j]);
  }
});

Deno.test("openTorchStateDict() over a FileSource lists tensors and loads one lazily", () => {
  using src = new FileSource(sharedFixture(`${TINY}/hf/pytorch_model.bin`));
  const refs = openTorchStateDict(src);
  const norm = refs.get("model.norm.weight")!;
  deepStrictEqual(norm.shape, [64]);
  strictEqual(norm.byteLength, 256);
  deepStrictEqual(norm.load().data, f32Ref.get("output_norm.weight")!.data);
});

// ---- hand-built checkpoints: pickle opcodes, strided views, deflate, ZIP64-free small zips ----

function crcless(entries: [string, Uint8Array][], deflate = false, zip64 = false): Uint8Array {
  // A small zip writer (CRCs left 0: the reader does not check them).
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let off = 0;
  for (const [name, raw] of entries) {
    const data = deflate ? new Uint8Array(deflateRawSync(raw)) : raw;
    const nm = enc.encode(name);
    const lh = new Uint8Array(30 + nm.length);
    const lv = new DataView(lh.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(8, deflate ? 8 : 0, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, raw.length, true);
    lv.setUint16(26, nm.length, true);
    lh.set(nm, 30);
    const ch = new Uint8Array(46 + nm.length + (zip64 ? 28 : 0));
    const cv = new DataView(ch.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(10, deflate ? 8 : 0, true);
    cv.setUint32(20, zip64 ? 0xffffffff : data.length, true);
    cv.setUint32(24, zip64 ? 0xffffffff : raw.length, true);
    cv.setUint16(28, nm.length, true);
    cv.setUint32(42, zip64 ? 0xffffffff : off, true);
    ch.set(nm, 46);
    if (zip64) {
      // ZIP64 extended information: uncompressed size, compressed size, header offset.
      const x = 46 + nm.length;
      cv.setUint16(30, 28, true);
      cv.setUint16(x, 1, true);
      cv.setUint16(x + 2, 24, true);
      cv.setBigUint64(x + 4, BigInt(raw.length), true);
      cv.setBigUint64(x + 12, BigInt(data.length), true);
      cv.setBigUint64(x + 20, BigInt(off), true);
    }
    parts.push(lh, data);
    central.push(ch);
    off += lh.length + data.length;
  }
  const cdSize = central.reduce((a, c) => a + c.length, 0);
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, zip64 ? 0xffff : entries.length, true);
  ev.setUint16(10, zip64 ? 0xffff : entries.length, true);
  ev.setUint32(12, zip64 ? 0xffffffff : cdSize, true);
  ev.setUint32(16, zip64 ? 0xffffffff : off, true);
  const tail: Uint8Array[] = [];
  if (zip64) {
    const rec = new Uint8Array(56 + 20);
    const rv = new DataView(rec.buffer);
    rv.setUint32(0, 0x06064b50, true);
    rv.setBigUint64(4, 44n, true);
    rv.setBigUint64(24, BigInt(entries.length), true);
    rv.setBigUint64(32, BigInt(entries.length), true);
    rv.setBigUint64(40, BigInt(cdSize), true);
    rv.setBigUint64(48, BigInt(off), true);
    rv.setUint32(56, 0x07064b50, true); // locator
    rv.setBigUint64(64, BigInt(off + cdSize), true);
    rv.setUint32(72, 1, true);
    tail.push(rec);
  }
  const all = [...parts, ...central, ...tail, eocd];
  const out = new Uint8Array(all.reduce((a, c) => a + c.length, 0));
  let p = 0;
  for (const c of all) {
    out.set(c, p);
    p += c.length;
  }
  return out;
}

/** Pickle bytes from a list of opcodes/strings/numbers (strings are latin1 raw bytes). */
function pk(...parts: (string | number[])[]): Uint8Array {
  const out: number[] = [];
  for (const part of parts) {
    if (typeof part === "string") { for (const ch of part) out.push(ch.charCodeAt(0)); }
    else out.push(...part);
  }
  return new Uint8Array(out);
}
const binunicode = (s: string) => {
  const b = new TextEncoder().encode(s);
  return [0x58, b.length & 255, (b.length >> 8) & 255, 0, 0, ...b];
};

/** A transposed [2,3] float32 view of a 6-element storage: sizes (3,2), strides (1,3). */
function transposedCheckpoint(deflate: boolean, zip64 = false): Uint8Array {
  const pkl = pk(
    [0x80, 2],
    "ccollections\nOrderedDict\n",
    [0x29, 0x52], // EMPTY_TUPLE REDUCE
    [0x28], // MARK
    binunicode("w"),
    "ctorch._utils\n_rebuild_tensor_v2\n",
    [0x28, 0x28], // MARK MARK
    binunicode("storage"),
    "ctorch\nFloatStorage\n",
    binunicode("0"),
    binunicode("cpu"),
    [0x4b, 6, 0x74, 0x51], // BININT1 6, TUPLE, BINPERSID
    [0x4b, 0], // offset 0
    [0x4b, 3, 0x4b, 2, 0x86], // size (3, 2)
    [0x4b, 1, 0x4b, 3, 0x86], // stride (1, 3)
    [0x89, 0x29, 0x74, 0x52], // False, (), TUPLE, REDUCE
    binunicode("n"),
    [0x8a, 2, 0x00, 0x80], // LONG1 -32768
    binunicode("f"),
    [0x47, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0], // BINFLOAT 1.5
    [0x75, 0x2e], // SETITEMS STOP
  );
  const storage = new Uint8Array(new Float32Array([0, 1, 2, 3, 4, 5]).buffer);
  return crcless([["archive/data.pkl", pkl], ["archive/data/0", storage]], deflate, zip64);
}

for (const [deflate, zip64] of [[false, false], [true, false], [false, true]]) {
  const kind = `${deflate ? "deflate" : "stored"}${zip64 ? ", ZIP64" : ""}`;
  Deno.test(`readTorchFile() materialises a strided view (${kind})`, () => {
    const root = readTorchFile(transposedCheckpoint(deflate, zip64)) as Map<string, unknown>;
    ok(root instanceof Map);
    const w = root.get("w") as TorchTensor;
    deepStrictEqual(w.shape, [3, 2]);
    // storage [[0,1,2],[3,4,5]] viewed transposed: [[0,3],[1,4],[2,5]]
    deepStrictEqual([...f32(w)], [0, 3, 1, 4, 2, 5]);
    strictEqual(root.get("n"), -32768);
    strictEqual(root.get("f"), 1.5);
  });
}

Deno.test("readTorchFile() rejects globals outside the torch subset", () => {
  const pkl = pk([0x80, 2], "cos\nsystem\n", binunicode("echo hi"), [0x85, 0x52, 0x2e]);
  throws(() => readTorchFile(crcless([["a/data.pkl", pkl]])), (e: Error) => {
    ok(e instanceof CheckpointFormatError);
    ok(e.message.includes("os.system"), e.message);
    return true;
  });
});

Deno.test("readTorchFile() rejects a view past its storage and a missing storage", () => {
  const big = transposedCheckpoint(false);
  // Drop the storage entry: rebuild without it.
  const z = ZipArchive.open(big);
  const pkl = z.read("archive/data.pkl");
  throws(() => readTorchFile(crcless([["archive/data.pkl", pkl]])), CheckpointFormatError);
  // Storage of 6 elements claimed as 600: the view fits but the entry is short.
  const lying = pkl.slice();
  const idx = [...lying].findIndex((b, i) =>
    b === 0x4b && lying[i + 1] === 6 && lying[i + 2] === 0x74
  );
  lying[idx] = 0x4d; // BININT2
  const patched = new Uint8Array(lying.length + 1);
  patched.set(lying.subarray(0, idx + 1));
  patched.set([0x58, 0x02], idx + 1); // 600
  patched.set(lying.subarray(idx + 2), idx + 3);
  const storage = new Uint8Array(new Float32Array([0, 1, 2, 3, 4, 5]).buffer);
  throws(
    () => readTorchFile(crcless([["archive/data.pkl", patched], ["archive/data/0", storage]])),
    CheckpointFormatError,
  );
});

Deno.test("readTorchFile() refuses a pathologically nested object graph", () => {
  const depth = 100000;
  const pkl = new Uint8Array(2 + depth * 2 + 2);
  pkl.set([0x80, 2]);
  pkl.fill(0x28, 2, 2 + depth); // MARK x depth
  pkl.fill(0x74, 2 + depth, 2 + 2 * depth); // TUPLE x depth
  pkl.set([0x85, 0x2e], 2 + 2 * depth); // TUPLE1 STOP
  throws(() => readTorchFile(crcless([["a/data.pkl", pkl]])), CheckpointFormatError);
});

Deno.test("readTorchStateDict() gives CheckpointFormatError on seeded corruptions", async () => {
  const files = [
    await Deno.readFile(sharedFixture(`${TINY}/predictor/model_0.pt`)),
    await Deno.readFile(sharedFixture(`${TINY}/activation/activation_0.pt`)),
  ];
  const rand = seededRandom(8);
  let typed = 0;
  for (let iter = 0; iter < 300; iter++) {
    const src = files[iter % files.length]!;
    const bytes = src.slice();
    // Corrupt the pickle (first 400 bytes) or the central directory (last 400 bytes), or cut.
    const mode = iter % 3;
    if (mode === 2) {
      const cut = Math.floor(rand() * bytes.length);
      try {
        readTorchFile(bytes.subarray(0, cut));
      } catch (e) {
        ok(e instanceof CheckpointFormatError, `cut ${cut}: ${e}`);
        typed++;
      }
      continue;
    }
    for (let k = 0; k < 4; k++) {
      const at = mode === 0
        ? Math.floor(rand() * 400)
        : bytes.length - 1 - Math.floor(rand() * 400);
      bytes[at] = Math.floor(rand() * 256);
    }
    try {
      readTorchFile(bytes);
    } catch (e) {
      ok(e instanceof CheckpointFormatError, `iter ${iter}: ${e}`);
      typed++;
    }
  }
  ok(typed > 100, `${typed} corruptions detected`);
});
