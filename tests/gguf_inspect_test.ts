// deno task inspect: text and JSON reports, errors as one line with exit status 1.
import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { inspectJson, inspectText } from "../src/cli/inspect.ts";
import { parseGguf } from "../src/gguf/reader.ts";
import { serializeGguf } from "../src/gguf/writer.ts";
import { GgmlType, GgufValueType } from "../src/gguf/types.ts";
import { sharedFixture } from "./_helpers.ts";

const INSPECT = fromFileUrl(new URL("../src/cli/inspect.ts", import.meta.url));

Deno.test("inspectText() shows kind, abridged arrays, the tensor table and totals", () => {
  const path = sharedFixture("models/tiny/tiny.powerinfer.f16.gguf");
  const text = inspectText(parseGguf(Deno.readFileSync(path)), path);
  match(text, /magic +PWRI \(powerinfer-model\), version 3/);
  match(
    text,
    /tokenizer\.ggml\.tokens +\[STRING\] +\[32000 strings: "<unk>", "<s>", "<\/s>", \.\.\.\]/,
  );
  match(text, /llama\.attention\.layer_norm_rms_epsilon +FLOAT32 +0\.000001\n/);
  match(text, /blk\.0\.ffn_down_t\.weight +F16 +\[64, 1024\] +131,072/);
  match(text, /tensors +25,/);
  match(text, /F16 +20 tensors 9,183,232 bytes\n +F32 +5 tensors 1,280 bytes/);
});

Deno.test("inspectJson() gives 64-bit ints as numbers when safe, else strings", async () => {
  const bytes = await serializeGguf({
    magic: "PWRI",
    metadata: [
      { key: "general.architecture", type: GgufValueType.STRING, value: "generic.gpu_index" },
      { key: "split.vram_capacity", type: GgufValueType.UINT64, value: 1n << 40n },
      { key: "big", type: GgufValueType.UINT64, value: (1n << 64n) - 1n },
      { key: "inf", type: GgufValueType.FLOAT32, value: -Infinity },
      {
        key: "long",
        type: GgufValueType.ARRAY,
        elementType: GgufValueType.INT32,
        value: Array.from({ length: 40 }, (_, i) => i),
      },
    ],
    tensors: [{
      name: "blk.0.gpu_idx",
      type: GgmlType.I32,
      ne: [8],
      data: () => new Uint8Array(32),
    }],
  });
  const json = inspectJson(parseGguf(bytes), "x.gguf");
  const round = JSON.parse(JSON.stringify(json));
  equal(round.kind, "powerinfer-gpu-index");
  const meta = round.metadata as { key: string; value: unknown; count?: number }[];
  equal(meta[1]!.value, 2 ** 40);
  equal(meta[2]!.value, "18446744073709551615");
  equal(meta[3]!.value, "-Infinity");
  equal(meta[4]!.count, 40);
  deepStrictEqual(meta[4]!.value, Array.from({ length: 16 }, (_, i) => i));
  deepStrictEqual(round.tensors, [
    { name: "blk.0.gpu_idx", type: "I32", ne: [8], offsetBytes: 0, byteLength: 32 },
  ]);
  deepStrictEqual(round.totals, {
    tensors: 1,
    bytes: 32,
    byType: { I32: { tensors: 1, bytes: 32 } },
  });
});

async function runInspect(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", INSPECT, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("inspect CLI prints one JSON object and one-line errors", async () => {
  const ok1 = await runInspect(sharedFixture("vocab/ggml-vocab-llama.gguf"), "--json");
  equal(ok1.code, 0, ok1.stderr);
  const json = JSON.parse(ok1.stdout);
  equal(json.version, 3);
  equal(json.metadata.length, 17);
  const bad = await runInspect(sharedFixture("models/tiny/hf/config.json"));
  equal(bad.code, 1);
  match(
    bad.stderr,
    /^error: Bad magic: expected "GGUF" or "PWRI", found 7b 0a 20 20 \(at byte 0\)\n$/,
  );
  const missing = await runInspect("/nonexistent.gguf");
  equal(missing.code, 1);
  equal(missing.stderr.trim().split("\n").length, 1);
  const help = await runInspect("--help");
  equal(help.code, 0);
  ok(help.stdout.startsWith("Usage: deno task inspect"));
});
