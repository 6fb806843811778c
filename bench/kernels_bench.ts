// Foundation kernel speed: FFI call overhead, f32/f16 matrix-vector throughput in GB/s of
// weights (1 thread and all threads), and the memory read bandwidth roofline measured by the
// library's streaming-read kernel. Run: `deno bench -A bench/kernels_bench.ts`.
// Besides deno bench's timings, the file prints a GB/s summary (median of a few runs).
import { GgmlType } from "../src/gguf/types.ts";
import {
  bandwidthRead,
  f32ToF16,
  matmul,
  nativeNoop,
  physicalCores,
  setThreads,
} from "../ffi/ops.ts";
import { openNative } from "../ffi/library.ts";
import { seededRandom } from "../tests/_helpers.ts";

const N_ROWS = 8192;
const N_COLS = 4096;
const BANDWIDTH_BYTES = 256 << 20;

const rnd = seededRandom(1);
const wF32 = Float32Array.from({ length: N_ROWS * N_COLS }, () => rnd() - 0.5);
const wF16 = new Uint16Array(wF32.length);
f32ToF16(wF32, wF16);
const weights = {
  F32: new Uint8Array(wF32.buffer),
  F16: new Uint8Array(wF16.buffer),
};
const x = Float32Array.from({ length: N_COLS }, () => rnd() - 0.5);
const out = new Float32Array(N_ROWS);
const big = new Uint8Array(BANDWIDTH_BYTES).fill(1); // touched: every page is resident

const allThreads = physicalCores();
const native = openNative();

function median(f: () => void, runs: number): number {
  f(); // warm up (threads, caches of x)
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    f();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[runs >> 1]! / 1000; // seconds
}

function summary(): void {
  const lines: string[] = [];
  const nCalls = 200_000;
  const t0 = performance.now();
  for (let i = 0; i < nCalls; i++) native.pi_noop();
  lines.push(
    `FFI call overhead (pi_noop): ${((performance.now() - t0) * 1e6 / nCalls).toFixed(1)} ns`,
  );
  for (const threads of [1, allThreads]) {
    setThreads(threads);
    for (const type of ["F32", "F16"] as const) {
      const w = weights[type];
      const s = median(() => matmul(out, w, GgmlType[type], N_ROWS, N_COLS, x, 1), 5);
      lines.push(
        `matvec ${type} ${N_ROWS}x${N_COLS}, ${threads} thread(s): ${
          (w.byteLength / s / 1e9).toFixed(2)
        } GB/s of weights (${(s * 1e3).toFixed(2)} ms)`,
      );
    }
    const s = median(() => bandwidthRead(big, 1), 5);
    lines.push(
      `streaming read, ${threads} thread(s): ${(BANDWIDTH_BYTES / s / 1e9).toFixed(2)} GB/s`,
    );
  }
  setThreads(0);
  console.log(lines.map((l) => `  ${l}`).join("\n"));
}

summary();

Deno.bench({ name: "pi_noop (FFI call overhead)", group: "ffi", baseline: true }, () => {
  native.pi_noop();
});
Deno.bench({ name: "nativeNoop() through ops.ts", group: "ffi" }, () => {
  nativeNoop();
});

for (const threads of [1, allThreads]) {
  for (const type of ["F32", "F16"] as const) {
    const w = weights[type];
    Deno.bench({
      name: `matvec ${type} ${N_ROWS}x${N_COLS} (${w.byteLength >> 20} MiB), ${threads} thread(s)`,
      group: `matvec ${type}`,
      fn(b) {
        setThreads(threads);
        b.start();
        matmul(out, w, GgmlType[type], N_ROWS, N_COLS, x, 1);
        b.end();
      },
    });
  }
  Deno.bench({
    name: `streaming read ${BANDWIDTH_BYTES >> 20} MiB, ${threads} thread(s)`,
    group: "bandwidth",
    fn(b) {
      setThreads(threads);
      b.start();
      bandwidthRead(big, 1);
      b.end();
    },
  });
}
