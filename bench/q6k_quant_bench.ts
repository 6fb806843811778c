// Per-thread Q6_K weight quantization throughput (pi_quantize with PI_QUANT_SERIAL, f32 input).
// Usage: deno run -A bench/q6k_quant_bench.ts [lib.so ...] — each library given (default: the
// built kernels) is timed on the same data in one run, so a saved baseline build can be compared.
import { seededRandom } from "../tests/_helpers.ts";

const Q6_K = 14, F32 = 0, SERIAL = 2;
const libs = Deno.args.length > 0 ? Deno.args : [
  new URL("../build/kernels/libpowerinfer_kernels.so", import.meta.url).pathname,
];
const nRows = 512, nCols = 4096;
const rnd = seededRandom(1);
const x = new Float32Array(nRows * nCols);
for (let i = 0; i < x.length; i++) {
  // Gaussian-ish weights with a per-row scale, like an output matrix.
  const u = rnd() + rnd() + rnd() - 1.5;
  x[i] = u * 0.02 * (1 + (Math.floor(i / nCols) % 5));
}
const outs: Uint8Array[] = [];
for (const path of libs) {
  const lib = Deno.dlopen(path, {
    pi_quantize: {
      parameters: ["buffer", "i32", "buffer", "i32", "i64", "i64", "i32"],
      result: "i32",
    },
  });
  const out = new Uint8Array(nRows * nCols / 256 * 210);
  let best = Infinity;
  for (let rep = 0; rep < 5; rep++) {
    const t0 = performance.now();
    const st = lib.symbols.pi_quantize(out, Q6_K, x, F32, BigInt(nRows), BigInt(nCols), SERIAL);
    const dt = performance.now() - t0;
    if (st !== 0) throw new Error(`${path}: pi_quantize returned ${st}`);
    best = Math.min(best, dt);
  }
  outs.push(out);
  console.log(
    `${path}: ${
      (x.byteLength / 1e6 / (best / 1e3)).toFixed(0)
    } MB/s per thread (f32 in, best of 5)`,
  );
  lib.close();
}
for (let k = 1; k < outs.length; k++) {
  const same = outs[k]!.every((b, i) => b === outs[0]![i]);
  console.log(`${libs[k]} output ${same ? "identical to" : "DIFFERS from"} ${libs[0]}`);
}
