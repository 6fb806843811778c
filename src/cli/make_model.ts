/**
 * `deno task make-model --shape tiny|small|tinyllama-1.1b|llama2-7b [--type f16|q4_0]
 * [--sparsity 0.87] [--seed N] [--dense] [--stats DIR|none] --out FILE`: writes a synthetic
 * ReLU-LLaMA PWRI model with planted sparsity and exact predictors (src/bench/make_model.ts).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { makeModel, MODEL_SHAPES } from "../bench/make_model.ts";

const USAGE =
  `Usage: deno task make-model --shape NAME [--type f16|q4_0] [--sparsity 0.87] [--seed N]
       [--dense] [--stats DIR|none] --out FILE
Shapes: ${Object.keys(MODEL_SHAPES).join(", ")}`;

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      shape: { type: "string" },
      type: { type: "string", default: "f16" },
      sparsity: { type: "string", default: "0.87" },
      seed: { type: "string", default: "1" },
      dense: { type: "boolean", default: false },
      stats: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.shape || !values.out || (values.type !== "f16" && values.type !== "q4_0")) {
    console.error(USAGE);
    return 2;
  }
  const t0 = performance.now();
  const result = await makeModel({
    shape: values.shape,
    out: values.out,
    type: values.type,
    sparsity: Number(values.sparsity),
    seed: Number(values.seed),
    dense: values.dense,
    statsDir: values.stats === "none" ? null : values.stats,
    onProgress: Deno.stderr.isTerminal()
      ? (m) => Deno.stderr.writeSync(new TextEncoder().encode(`\r${m.padEnd(40)}`))
      : undefined,
  });
  const mean = result.activeFraction.reduce((s, v) => s + v, 0) / result.activeFraction.length;
  console.error(
    `\n${result.path}: ${(result.byteLength / 2 ** 20).toFixed(1)} MiB in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s; planted active fraction ${(mean * 100).toFixed(1)}%${
      result.statsPath ? `; stats ${result.statsPath}` : ""
    }`,
  );
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    console.error(`make-model: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
}
