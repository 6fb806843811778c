// Solver speed on a 70B shape (80 layers × 28672 neurons, LLaMA-2-70B's FFN): `deno bench -A bench/gpu_index_bench.ts`.
import { solveGpuIndex } from "../src/gpu_index/solve.ts";
import { seededRandom } from "../tests/_helpers.ts";

const N_LAYER = 80;
const N_FF = 28672;
const rand = seededRandom(70);
// Skewed integer counts like real activation statistics (a few hot neurons, a long cold tail).
const counts = Array.from({ length: N_LAYER }, () => {
  const layer = new Float64Array(N_FF);
  for (let j = 0; j < N_FF; j++) layer[j] = Math.floor(Math.pow(rand(), 4) * 100_000);
  return layer;
});
const capacity = Math.floor(N_LAYER * N_FF * 0.3);

Deno.bench("solveGpuIndex 80×28672, batch 256, threshold 0", { baseline: true }, () => {
  solveGpuIndex({ counts, capacityNeurons: capacity });
});
Deno.bench("solveGpuIndex 80×28672, batch 256, threshold 4096 (DP)", () => {
  solveGpuIndex({ counts, capacityNeurons: capacity, threshold: 4096 });
});
Deno.bench("solveGpuIndex 80×28672, batch 1, threshold 0", () => {
  solveGpuIndex({ counts, capacityNeurons: capacity, batch: 1 });
});
Deno.bench("solveGpuIndex 80×28672 + every gpu_idx/gpu_bucket", () => {
  const sol = solveGpuIndex({ counts, capacityNeurons: capacity });
  for (let i = 0; i < N_LAYER; i++) {
    sol.gpuIdx(i);
    sol.gpuBucket(i);
  }
});
