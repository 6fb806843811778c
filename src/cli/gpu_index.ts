/**
 * `deno task gpu-index`: plans which FFN neurons of a PowerInfer model go to the GPU under a VRAM
 * budget, prints the plan and writes `<model>.generated.gpuidx` (spec gpu-index.md). Replaces
 * PowerInfer's `python3 -m powerinfer` (exact solver, no Python, layers matched by number).
 *
 * @module
 */

import { reportError, usageLine } from "./report_error.ts";
import { numberOption, parseCliArgs } from "./options.ts";
import { GpuIndexError } from "../errors.ts";
import { checkOutputPath } from "../gguf/output_file.ts";
import { dirname, join } from "node:path";
import { openGguf } from "../gguf/open.ts";
import { budgetShapeOf } from "../gpu_index/budget.ts";
import { checkGpuIndexOutPath, gpuIndexPathFor, writeGpuIndex } from "../gpu_index/gpuidx.ts";
import { formatPlan, planGpuIndex, planToJson } from "../gpu_index/plan.ts";
import { readActivationDir } from "../gpu_index/stats.ts";

const USAGE = `usage: deno task gpu-index -m MODEL --vram-budget GiB [options]

Chooses the hot FFN neurons of a PowerInfer (PWRI) model for the GPU, maximising the activation
mass on the GPU under the budget, and writes the index PowerInfer and powerinfer-deno load.

options:
  -h, --help              show this help and exit
  -m, --model FNAME       model path (required)
      --activation DIR    activation statistics (default: <model dir>/activation); either
                          activation_<L>.pt files or our activation_counts.json
      --vram-budget GiB   VRAM budget; dense blocks (attention, predictor, norms, output,
                          KV cache, scratch) are counted first, neurons get the rest
      --neurons N         neuron capacity given directly (overrides the budget's)
      --batch N           neurons per group (default 256)
      --threshold N       a layer with hot neurons gets at least N (default 0)
  -c, --ctx-size N        context size for the KV cache (default 512)
  -b, --batch-size N      tokens per decode for the scratch estimate (default 512)
      --memory-f32        f32 KV cache instead of f16
      --out FNAME         index path (default: <model>.generated.gpuidx)
      --no-write          print the plan only
      --json              print the plan as JSON (with neuronsPerLayer)
`;

/** Runs the CLI; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const parsed = parseCliArgs("gpu-index", USAGE, {
    args: args.map((a) => (a.startsWith("--") ? a.replaceAll("_", "-") : a)),
    options: {
      help: { type: "boolean", short: "h" },
      model: { type: "string", short: "m" },
      activation: { type: "string" },
      "vram-budget": { type: "string" },
      neurons: { type: "string" },
      batch: { type: "string" },
      threshold: { type: "string" },
      "ctx-size": { type: "string", short: "c" },
      "batch-size": { type: "string", short: "b" },
      "memory-f32": { type: "boolean" },
      out: { type: "string" },
      "no-write": { type: "boolean" },
      json: { type: "boolean" },
    },
    strict: true,
  });
  if (typeof parsed === "number") return parsed;
  const { values } = parsed;
  if (!values.model) {
    console.error(usageLine("-m MODEL is required", "gpu-index"));
    return 1;
  }
  if (values["vram-budget"] === undefined && values.neurons === undefined) {
    console.error(usageLine("Give --vram-budget GiB or --neurons N", "gpu-index"));
    return 1;
  }
  let numbers;
  try {
    // Parsed before any file is opened; the solver checks what depends on the model.
    numbers = {
      vramBudgetGiB: numberOption("vram-budget", values["vram-budget"], {
        min: 0,
        max: 2 ** 23 - 1,
        unit: "GiB",
      }),
      neurons: numberOption("neurons", values.neurons, { integer: true, min: 0 }),
      batch: numberOption("batch", values.batch, { integer: true, min: 1 }),
      threshold: numberOption("threshold", values.threshold),
      nCtx: numberOption("ctx-size", values["ctx-size"], { integer: true, min: 1 }),
      nBatch: numberOption("batch-size", values["batch-size"], { integer: true, min: 1 }),
    };
  } catch (error) {
    console.error(usageLine((error as Error).message, "gpu-index"));
    return 1;
  }
  try {
    const modelPath = values.model;
    if (!values["no-write"]) {
      const out = values.out ?? gpuIndexPathFor(modelPath);
      checkOutputPath(out);
      checkGpuIndexOutPath(out);
    }
    using file = openGguf(modelPath);
    if (file.kind === "powerinfer-gpu-index") {
      throw new GpuIndexError(
        `File "${modelPath}" is a GPU-index file, not a model: pass the PowerInfer model with -m`,
      );
    }
    const shape = budgetShapeOf(file);
    const dir = values.activation ?? join(dirname(modelPath), "activation");
    const stats = await readActivationDir(dir, { nLayer: shape.nLayer, nFf: shape.nFf });
    const plan = planGpuIndex(file, stats, {
      ...numbers,
      kvType: values["memory-f32"] ? "f32" : "f16",
    });
    const out = values.out ?? gpuIndexPathFor(modelPath);
    if (!values["no-write"]) await writeGpuIndex(out, plan.index);
    if (values.json) {
      console.log(JSON.stringify({
        model: modelPath,
        activation: stats.source,
        ...(values["no-write"] ? {} : { out }),
        ...planToJson(plan),
      }));
    } else {
      console.log(`model: ${modelPath}\nstatistics: ${stats.source}`);
      console.log(formatPlan(plan));
      if (!values["no-write"]) console.log(`wrote ${out}`);
    }
    return 0;
  } catch (error) {
    return reportError(error);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
