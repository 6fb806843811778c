/**
 * When the engine uses, makes or ignores a GPU index (spec gpu-index.md §2.4, with our changes):
 *
 * - `disableGpuIndex`: no split; every FFN neuron runs cold on the CPU.
 * - no `vramBudget`: no split (this build cannot ask a GPU for its free memory).
 * - otherwise the budget in bytes, minus the dense blocks ({@link modelBudget}), leaves `B` bytes
 *   for FFN neurons. `<model>.generated.gpuidx` is used when it was made for exactly `B`
 *   (`split.vram_capacity == B`) and fits the model (one `gpu_idx` of n_ff per layer). When the
 *   budget changed (PowerInfer would silently reuse an index made for a smaller budget), when the
 *   file does not fit, or with `resetGpuIndex`, the index is regenerated from the activation
 *   statistics (default `<model dir>/activation`) and written next to the model.
 * - Missing statistics when an index must be made is a {@link GpuIndexError} naming the fix
 *   (`deno task profile`), never a silent all-CPU fallback. So is a budget too small for the dense
 *   blocks.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { PowerInferError } from "../errors.ts";
import type { GgufFile } from "../gguf/reader.ts";
import { type BudgetRunOptions, budgetShapeOf, modelBudget } from "./budget.ts";
import { type GpuIndex, gpuIndexPathFor, readGpuIndex, writeGpuIndexSync } from "./gpuidx.ts";
import { type GpuIndexPlan, planGpuIndex } from "./plan.ts";
import { readActivationDirSync } from "./stats.ts";

/** The load options the policy reads (a subset of the engine's `LoadModelOptions`). */
export interface GpuIndexPolicyOptions extends BudgetRunOptions {
  /** VRAM budget in GiB. */
  readonly vramBudget?: number;
  /** Regenerate the index even if a matching one exists. */
  readonly resetGpuIndex?: boolean;
  /** Every FFN neuron on the CPU. */
  readonly disableGpuIndex?: boolean;
  /** Statistics directory (default `<model dir>/activation`). */
  readonly activationDir?: string;
  /** Solver group size and per-layer minimum (defaults 256 and 0). */
  readonly batch?: number;
  readonly threshold?: number;
  /** Receives one line about what was decided (default: nothing). */
  readonly log?: (line: string) => void;
}

/** What the policy decided. */
export interface GpuIndexDecision {
  readonly status: "disabled" | "no-budget" | "loaded" | "generated";
  /** Per-layer hot masks for the engine (`null` = every neuron cold). */
  readonly gpuIdx: Uint8Array[] | null;
  readonly index: GpuIndex | null;
  /** The index file used or written. */
  readonly path: string | null;
  /** Present when the index was generated. */
  readonly plan: GpuIndexPlan | null;
  /** One line for the log. */
  readonly message: string;
}

/**
 * Applies the policy for one model load (see the module doc).
 *
 * @param modelPath The model file's path (the index lives at `<modelPath>.generated.gpuidx`).
 * @param file The opened model.
 * @param opts Budget, flags, context and batch sizes.
 * @returns The decision, with the per-layer masks to pass to the sparse FFN.
 * @throws {GpuIndexError} If the budget cannot hold the dense blocks, or an index must be made and
 * the statistics are missing or do not fit the model.
 *
 * @example Feed the decision to the engine
 * ```ts ignore
 * import { openGguf } from "../gguf/open.ts";
 * import { loadModel } from "../model/model.ts";
 * import { resolveGpuIndex } from "./policy.ts";
 * using file = openGguf("model.powerinfer.gguf");
 * const d = resolveGpuIndex("model.powerinfer.gguf", file, { vramBudget: 8 });
 * using model = loadModel("model.powerinfer.gguf", { gpuIdx: d.gpuIdx ?? undefined, hot: myGpuSide });
 * ```
 */
export function resolveGpuIndex(
  modelPath: string,
  file: GgufFile,
  opts: GpuIndexPolicyOptions,
): GpuIndexDecision {
  const decide = (d: GpuIndexDecision): GpuIndexDecision => {
    opts.log?.(d.message);
    return d;
  };
  const none = { gpuIdx: null, index: null, path: null, plan: null };
  if (opts.disableGpuIndex) {
    return decide({
      status: "disabled",
      ...none,
      message: "GPU index disabled: all FFN neurons on the CPU",
    });
  }
  if (opts.vramBudget === undefined) {
    return decide({
      status: "no-budget",
      ...none,
      message: "No VRAM budget: all FFN neurons on the CPU",
    });
  }
  const shape = budgetShapeOf(file);
  const budget = modelBudget(file, opts.vramBudget, opts);
  const path = gpuIndexPathFor(modelPath);
  let why = "reset requested";
  if (!opts.resetGpuIndex) {
    const existing = tryRead(path);
    if (existing === null) why = "no index file";
    else if (typeof existing === "string") why = existing;
    else {
      const misfit = misfitOf(existing, shape.nLayer, shape.nFf, budget.ffnBytes);
      if (misfit === null) {
        return decide({
          status: "loaded",
          gpuIdx: existing.layers.map((l) => l.gpuIdx),
          index: existing,
          path,
          plan: null,
          message: `Loaded GPU index ${path} (${hotCount(existing)} hot neurons)`,
        });
      }
      why = misfit;
    }
  }
  const dir = opts.activationDir ?? join(dirname(modelPath), "activation");
  const stats = readActivationDirSync(dir, { nLayer: shape.nLayer, nFf: shape.nFf });
  const plan = planGpuIndex(file, stats, { ...opts, vramBudgetGiB: opts.vramBudget });
  writeGpuIndexSync(path, plan.index);
  return decide({
    status: "generated",
    gpuIdx: plan.index.layers.map((l) => l.gpuIdx),
    index: plan.index,
    path,
    plan,
    message: `Generated GPU index ${path} (${why}; ${hotCount(plan.index)} hot neurons)`,
  });
}

function tryRead(path: string): GpuIndex | string | null {
  try {
    return readGpuIndex(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    if (error instanceof PowerInferError) return `unreadable index (${error.message})`;
    throw error;
  }
}

function misfitOf(index: GpuIndex, nLayer: number, nFf: number, ffnBytes: number): string | null {
  if (index.layers.length !== nLayer) {
    return `index has ${index.layers.length} layers, model ${nLayer}`;
  }
  const bad = index.layers.findIndex((l) => l.gpuIdx.length !== nFf);
  if (bad >= 0) {
    return `index layer ${bad} has ${index.layers[bad]!.gpuIdx.length} neurons, model ${nFf}`;
  }
  if (index.vramCapacity !== ffnBytes) {
    return `budget changed: index made for ${index.vramCapacity} B of FFN budget, now ${ffnBytes} B`;
  }
  return null;
}

function hotCount(index: GpuIndex): number {
  return index.layers.reduce((a, l) => a + l.gpuBucket.length, 0);
}

/** The engine's load options this helper reads. */
export interface GpuIndexLoadOptions extends GpuIndexPolicyOptions {
  /** Masks given explicitly (they win). */
  readonly gpuIdx?: readonly (Uint8Array | null)[];
  /** The hot side (GPU backend); without one every neuron stays on the CPU. */
  readonly hot?: unknown;
}

/**
 * The engine's hook: the per-layer hot masks a model load should use. Explicit `gpuIdx` wins;
 * without a hot side (a CPU-only run) the GPU-index options are ignored — with one warning line
 * when a budget was given, as PowerInfer's CPU build does — and no index or statistics file is
 * touched; otherwise {@link resolveGpuIndex} decides.
 *
 * @param modelPath The model file's path.
 * @param file The opened model.
 * @param options The load options (budget, flags, context, batch, KV type, gpuIdx, hot).
 * @returns Per-layer masks, or null for all-cold.
 * @throws {GpuIndexError} As {@link resolveGpuIndex}.
 *
 * @example In `loadModel`
 * ```ts ignore
 * const gpuIdx = options.gpuIdx ??
 *   gpuIndexForLoad(path, file, { ...options, nCtx, nBatch }, (l) => console.error(l));
 * ```
 */
export function gpuIndexForLoad(
  modelPath: string,
  file: GgufFile,
  options: GpuIndexLoadOptions,
  log?: (line: string) => void,
): readonly (Uint8Array | null)[] | null {
  if (options.gpuIdx) return options.gpuIdx;
  if (!options.hot) {
    if (options.vramBudget !== undefined && !options.disableGpuIndex) {
      log?.("warning: --vram-budget is ignored: no GPU backend, every FFN neuron runs on the CPU");
    }
    return null;
  }
  return resolveGpuIndex(modelPath, file, { ...options, log: options.log ?? log }).gpuIdx;
}
