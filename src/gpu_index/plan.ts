/**
 * A GPU-index plan for one model: the budget split ({@link modelBudget}), the solver's choice
 * ({@link solveGpuIndex}) and the resulting index, with a printable and a JSON form.
 *
 * @module
 */

import { GpuIndexError } from "../errors.ts";
import type { GgufFile } from "../gguf/reader.ts";
import { type BudgetRunOptions, budgetShapeOf, modelBudget, neuronByteCost } from "./budget.ts";
import type { GpuIndex } from "./gpuidx.ts";
import type { ActivationStats } from "./stats.ts";
import {
  DEFAULT_GPU_INDEX_BATCH,
  formatBytes,
  type GpuBudget,
  type GpuIndexSolution,
  solveGpuIndex,
} from "./solve.ts";

/** How to size the index. */
export interface GpuIndexPlanOptions extends BudgetRunOptions {
  /** VRAM budget in GiB (dense blocks first, neurons get the rest). */
  readonly vramBudgetGiB?: number;
  /** Neuron capacity given directly (as PowerInfer's solver takes it); overrides the budget's. */
  readonly neurons?: number;
  /** Group size (default 256). */
  readonly batch?: number;
  /** Minimum hot neurons of a layer that gets any (default 0). */
  readonly threshold?: number;
}

/** The plan. */
export interface GpuIndexPlan {
  readonly nLayer: number;
  readonly nFf: number;
  /** Present when a VRAM budget was given. */
  readonly budget: GpuBudget | undefined;
  readonly neuronBytes: number;
  readonly capacityNeurons: number;
  readonly solution: GpuIndexSolution;
  /** Bytes the hot neurons take on the GPU. */
  readonly ffnBytesUsed: number;
  readonly index: GpuIndex;
  /** Tokens behind the statistics, when known. */
  readonly tokens: number | undefined;
}

/**
 * Plans the GPU index of a model.
 *
 * @param file The model (PWRI).
 * @param stats Its activation statistics (one array of n_ff counts per layer).
 * @param opts Budget or neuron capacity, batch, threshold, context.
 * @returns The plan, with the index to write.
 * @throws {GpuIndexError} If neither a budget nor a capacity is given, the budget is impossible,
 * or the statistics do not fit the model.
 *
 * @example
 * ```ts ignore
 * import { openGguf } from "../gguf/open.ts";
 * import { planGpuIndex, formatPlan } from "./plan.ts";
 * import { readActivationDir } from "./stats.ts";
 * using file = openGguf("model.powerinfer.gguf");
 * const plan = planGpuIndex(file, await readActivationDir("activation"), { vramBudgetGiB: 8 });
 * console.log(formatPlan(plan));
 * ```
 */
export function planGpuIndex(
  file: GgufFile,
  stats: ActivationStats,
  opts: GpuIndexPlanOptions,
): GpuIndexPlan {
  const shape = budgetShapeOf(file);
  if (stats.counts.length !== shape.nLayer) {
    throw new GpuIndexError(
      `Activation statistics (${stats.source}) cover ${stats.counts.length} layers: the model has ${shape.nLayer}`,
    );
  }
  stats.counts.forEach((c, i) => {
    if (c.length !== shape.nFf) {
      throw new GpuIndexError(
        `Activation statistics of layer ${i} (${stats.source}) have ${c.length} neurons: the model has ${shape.nFf}`,
      );
    }
  });
  let budget: GpuBudget | undefined;
  let neuronBytes: number;
  if (opts.vramBudgetGiB !== undefined) {
    budget = modelBudget(file, opts.vramBudgetGiB, opts);
    neuronBytes = budget.neuronBytes;
  } else if (opts.neurons !== undefined) {
    neuronBytes = neuronByteCost(file, shape.nLayer);
  } else {
    throw new GpuIndexError("Give a VRAM budget (--vram-budget GiB) or a capacity (--neurons N)");
  }
  if (opts.neurons !== undefined && !(Number.isSafeInteger(opts.neurons) && opts.neurons >= 0)) {
    throw new GpuIndexError(`Invalid neuron capacity ${opts.neurons}: expected an integer >= 0`);
  }
  const capacityNeurons = opts.neurons ?? budget!.capacityNeurons;
  const solution = solveGpuIndex({
    counts: stats.counts,
    capacityNeurons,
    batch: opts.batch ?? DEFAULT_GPU_INDEX_BATCH,
    threshold: opts.threshold ?? 0,
  });
  const layers = stats.counts.map((_, i) => {
    const gpuBucket = solution.gpuBucket(i);
    const gpuIdx = new Uint8Array(shape.nFf);
    for (const j of gpuBucket) gpuIdx[j] = 1;
    return { gpuIdx, gpuBucket };
  });
  const nHot = solution.neuronsPerLayer.reduce((a, b) => a + b, 0);
  return {
    nLayer: shape.nLayer,
    nFf: shape.nFf,
    budget,
    neuronBytes,
    capacityNeurons,
    solution,
    ffnBytesUsed: nHot * neuronBytes,
    index: { vramCapacity: budget?.ffnBytes ?? capacityNeurons * neuronBytes, layers },
    tokens: stats.tokens,
  };
}

/**
 * The plan as lines of text: what goes to the GPU, bytes per part, budget left.
 *
 * @param plan A plan from {@link planGpuIndex}.
 * @returns Printable lines.
 */
export function formatPlan(plan: GpuIndexPlan): string {
  const lines: string[] = [];
  const b = plan.budget;
  if (b) {
    lines.push(`VRAM budget: ${formatBytes(b.budgetBytes)}`);
    lines.push(`dense blocks first (${formatBytes(b.denseBytes)}):`);
    for (const d of b.dense) {
      lines.push(
        `  ${d.part.padEnd(10)} ${formatBytes(d.byteLength)}${d.detail ? `  (${d.detail})` : ""}`,
      );
    }
    lines.push(`left for FFN neurons: ${formatBytes(b.ffnBytes)}`);
  }
  lines.push(
    `one hot neuron: ${plan.neuronBytes} B (its ffn_up, ffn_gate, ffn_down_t rows + bucket entry); capacity ${plan.capacityNeurons} neurons`,
  );
  const s = plan.solution;
  lines.push(`batch ${s.batch}, threshold ${s.threshold}`);
  const pct = (x: number, of: number) => (of > 0 ? ((100 * x) / of).toFixed(1) : "0.0");
  for (let i = 0; i < plan.nLayer; i++) {
    const k = s.neuronsPerLayer[i]!;
    lines.push(
      `  layer ${String(i).padStart(3)}: ${String(k).padStart(7)} / ${plan.nFf} hot (${
        pct(k, plan.nFf)
      }% of neurons)  mass ${s.hotMassPerLayer[i]}`,
    );
  }
  const nHot = s.neuronsPerLayer.reduce((a, c) => a + c, 0);
  lines.push(
    `GPU: ${nHot} hot neurons, ${formatBytes(plan.ffnBytesUsed)} of FFN weights; ${
      pct(s.hotMass, s.totalMass)
    }% of the activation mass`,
  );
  if (b) {
    lines.push(
      `budget left: ${formatBytes(b.budgetBytes - b.denseBytes - plan.ffnBytesUsed)}`,
    );
  }
  return lines.join("\n");
}

/**
 * The plan as a JSON-able object (`neuronsPerLayer` and the byte accounting).
 *
 * @param plan A plan from {@link planGpuIndex}.
 * @returns A plain object.
 */
export function planToJson(plan: GpuIndexPlan): Record<string, unknown> {
  const b = plan.budget;
  const s = plan.solution;
  return {
    nLayer: plan.nLayer,
    nFf: plan.nFf,
    neuronsPerLayer: s.neuronsPerLayer,
    hotMassPerLayer: s.hotMassPerLayer,
    hotMassFraction: s.totalMass > 0 ? s.hotMass / s.totalMass : 0,
    capacityNeurons: plan.capacityNeurons,
    neuronBytes: plan.neuronBytes,
    ffnBytesUsed: plan.ffnBytesUsed,
    vramCapacity: plan.index.vramCapacity,
    batch: s.batch,
    threshold: s.threshold,
    ...(b
      ? {
        budgetBytes: b.budgetBytes,
        dense: b.dense,
        denseBytes: b.denseBytes,
        ffnBytes: b.ffnBytes,
        budgetLeftBytes: b.budgetBytes - b.denseBytes - plan.ffnBytesUsed,
      }
      : {}),
    ...(plan.tokens !== undefined ? { tokens: plan.tokens } : {}),
  };
}
