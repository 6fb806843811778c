import { deepStrictEqual, strictEqual, throws } from "node:assert/strict";
import {
  gpuIndexLayer,
  gpuIndexPathFor,
  readGpuIndex,
  serializeGpuIndex,
  serializeGpuIndexSync,
  writeGpuIndex,
} from "../src/gpu_index/gpuidx.ts";
import { parseGguf } from "../src/gguf/reader.ts";
import { serializeGguf } from "../src/gguf/writer.ts";
import { GgmlType, GgufValueType } from "../src/gguf/types.ts";
import { GpuIndexError } from "../src/errors.ts";
import { seededRandom } from "./_helpers.ts";

/** gpu-index.md §4 worked example: 12 layers, n_ff 1024, these hot counts, capacity 123456789. */
function workedExample() {
  const counts = [0, 0, 0, 0, 0, 256, 256, 256, 512, 512, 512, 512];
  const rand = seededRandom(3);
  const layers = counts.map((k) => {
    const ids = Array.from({ length: 1024 }, (_, j) => j).sort(() => rand() - 0.5);
    return gpuIndexLayer(1024, ids.slice(0, k));
  });
  return { vramCapacity: 123456789, layers };
}

Deno.test("serializeGpuIndex() writes PowerInfer's layout byte for byte (spec worked example)", async () => {
  const bytes = await serializeGpuIndex(workedExample());
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  deepStrictEqual([...bytes.subarray(0, 8)], [0x50, 0x57, 0x52, 0x49, 3, 0, 0, 0]);
  strictEqual(view.getBigUint64(8, true), 24n); // tensors
  strictEqual(view.getBigUint64(16, true), 3n); // KVs
  strictEqual(view.getBigUint64(24, true), 20n);
  strictEqual(new TextDecoder().decode(bytes.subarray(32, 52)), "general.architecture");
  const file = parseGguf(bytes);
  strictEqual(file.kind, "powerinfer-gpu-index");
  deepStrictEqual([...file.metadata.keys()], [
    "general.architecture",
    "generic.gpu_index.block_count",
    "split.vram_capacity",
  ]);
  strictEqual(file.getU32("generic.gpu_index.block_count"), 12);
  strictEqual(file.getU64("split.vram_capacity"), 123456789n);
  strictEqual(file.dataOffset, 1312); // metadata ends at 1285, padded to 32
  strictEqual(file.tensors[0]!.name, "blk.0.gpu_idx");
  strictEqual(file.tensors[1]!.name, "blk.0.gpu_bucket");
  deepStrictEqual(file.tensors[1]!.ne, [0]);
  strictEqual(file.tensors[1]!.offsetBytes, 4096);
  strictEqual(file.tensors[2]!.offsetBytes, 4096); // an empty bucket takes no bytes
  strictEqual(file.tensors[23]!.type, GgmlType.I32);
});

Deno.test("writeGpuIndex() then readGpuIndex() round-trips every layer", async () => {
  const index = workedExample();
  const dir = await Deno.makeTempDir();
  const path = gpuIndexPathFor(`${dir}/model.gguf`);
  strictEqual(path, `${dir}/model.gguf.generated.gpuidx`);
  try {
    await writeGpuIndex(path, index);
    const back = readGpuIndex(path);
    strictEqual(back.vramCapacity, index.vramCapacity);
    strictEqual(back.layers.length, 12);
    back.layers.forEach((layer, i) => {
      deepStrictEqual(layer.gpuIdx, index.layers[i]!.gpuIdx);
      deepStrictEqual(layer.gpuBucket, index.layers[i]!.gpuBucket);
      strictEqual(layer.gpuBucket.length, [0, 0, 0, 0, 0, 256, 256, 256, 512, 512, 512, 512][i]);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A PowerInfer-style file made with the raw GGUF writer (names irrelevant: read by position). */
function rawIndex(tensors: { name: string; values: number[]; type?: GgmlType }[], capacity = 7n) {
  return serializeGguf({
    magic: "PWRI",
    metadata: [
      { key: "general.architecture", type: GgufValueType.STRING, value: "generic.gpu_index" },
      { key: "split.vram_capacity", type: GgufValueType.UINT64, value: capacity },
    ],
    tensors: tensors.map(({ name, values, type }) => ({
      name,
      type: type ?? GgmlType.I32,
      ne: [values.length],
      data: () => new Uint8Array(Int32Array.from(values).buffer),
    })),
  });
}

Deno.test("readGpuIndex() takes tensors by position, as PowerInfer's loader does", async () => {
  const bytes = await rawIndex([
    { name: "x", values: [0, 1, 1, 0] },
    { name: "y", values: [1, 2] },
    { name: "blk.0.gpu_idx", values: [1, 0, 0, 0] },
    { name: "blk.0.gpu_bucket", values: [0] },
  ]);
  const index = readGpuIndex(bytes);
  strictEqual(index.vramCapacity, 7);
  deepStrictEqual([...index.layers[0]!.gpuIdx], [0, 1, 1, 0]);
  deepStrictEqual([...index.layers[1]!.gpuBucket], [0]);
});

Deno.test("readGpuIndex() rejects inconsistent files with GpuIndexError", async () => {
  const bad = [
    [{ name: "a", values: [0, 1] }], // odd tensor count
    [{ name: "a", values: [0, 2] }, { name: "b", values: [1] }], // not 0/1
    [{ name: "a", values: [0, 1, 1] }, { name: "b", values: [2, 1] }], // not ascending
    [{ name: "a", values: [0, 1, 1] }, { name: "b", values: [1] }], // bucket too short
    [{ name: "a", values: [0, 1] }, { name: "b", values: [1], type: GgmlType.F32 }],
  ];
  for (const tensors of bad) {
    const bytes = await rawIndex(tensors);
    throws(() => readGpuIndex(bytes), GpuIndexError, JSON.stringify(tensors));
  }
  const noCapacity = await serializeGguf({ magic: "PWRI", metadata: [], tensors: [] });
  throws(() => readGpuIndex(noCapacity), GpuIndexError);
  throws(() => gpuIndexLayer(4, [1, 1]), GpuIndexError);
  throws(() => gpuIndexLayer(4, [4]), GpuIndexError);
});

Deno.test("serializeGpuIndexSync() writes the same bytes as serializeGpuIndex()", async () => {
  const index = workedExample();
  deepStrictEqual(serializeGpuIndexSync(index), await serializeGpuIndex(index));
});
