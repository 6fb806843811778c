/**
 * `deno task profile`: runs a PowerInfer model over a text and writes per-layer activation
 * counts (`activation_counts.json`, format in src/gpu_index/stats.ts) for `deno task gpu-index`
 * and the engine's GPU-index policy.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { PowerInferError } from "../errors.ts";
import { profileActivations } from "../gpu_index/profile.ts";
import { ACTIVATION_JSON, formatActivationJson } from "../gpu_index/stats.ts";
import { torchSave1d } from "../gpu_index/torch_save.ts";

const USAGE = `usage: deno task profile -m MODEL -f TEXT [options]

Counts, per layer and FFN neuron, how many tokens of TEXT make the neuron fire, and writes
<DIR>/${ACTIVATION_JSON} (DIR defaults to <model dir>/activation).

options:
  -h, --help            show this help and exit
  -m, --model FNAME     PowerInfer (PWRI) model (required)
  -f, --file FNAME      text to run; a .json file holding an array of strings is read as
                        documents, each run as [BOS] + text + [EOS]
      --out DIR         output directory (default: <model dir>/activation)
      --mode MODE       gate (default): every neuron computed, fired = gate > 0 (like
                        PowerInfer's published statistics); predictor: the model's predictor
                        decides which neurons run, fired = selected and gate > 0
  -c, --ctx-size N      window in tokens; the context is reset between windows (default:
                        the model's training context, at most 512)
  -t, --threads N       CPU threads
      --max-tokens N    stop after N tokens
      --pt              also write activation_<L>.pt files (torch.save format) for
                        PowerInfer's Python solver
      --json            print the result (fractions, tokens, path) as JSON
`;

/** Runs the CLI; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: args.map((a) => (a.startsWith("--") ? a.replaceAll("_", "-") : a)),
      options: {
        help: { type: "boolean", short: "h" },
        model: { type: "string", short: "m" },
        file: { type: "string", short: "f" },
        out: { type: "string" },
        mode: { type: "string" },
        "ctx-size": { type: "string", short: "c" },
        threads: { type: "string", short: "t" },
        "max-tokens": { type: "string" },
        pt: { type: "boolean" },
        json: { type: "boolean" },
      },
      strict: true,
    }));
  } catch (error) {
    console.error(`error: ${(error as Error).message}\n\n${USAGE}`);
    return 1;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.model || !values.file) {
    console.error(`error: -m MODEL and -f TEXT are required\n\n${USAGE}`);
    return 1;
  }
  const mode = values.mode ?? "gate";
  if (mode !== "gate" && mode !== "predictor") {
    console.error(`error: --mode must be gate or predictor, found ${mode}`);
    return 1;
  }
  const int = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) {
      throw new RangeError(`Invalid value for --${name}: ${v} (expected a positive integer)`);
    }
    return n;
  };
  try {
    const text = await Deno.readTextFile(values.file);
    let documents: string[] = [text];
    if (values.file.endsWith(".json")) {
      const parsed = JSON.parse(text);
      if (!Array.isArray(parsed) || !parsed.every((d) => typeof d === "string")) {
        throw new RangeError(`${values.file}: expected a JSON array of strings`);
      }
      documents = parsed;
    }
    const t0 = performance.now();
    const result = profileActivations(values.model, documents, {
      mode,
      nCtx: int("ctx-size", values["ctx-size"]),
      threads: int("threads", values.threads),
      maxTokens: int("max-tokens", values["max-tokens"]),
      onProgress: values.json ? undefined : (done, total) => {
        Deno.stderr.writeSync(new TextEncoder().encode(`\rprofiled ${done}/${total} tokens`));
      },
    });
    if (!values.json) console.error();
    const dir = values.out ?? join(dirname(values.model), "activation");
    await Deno.mkdir(dir, { recursive: true });
    const out = join(dir, ACTIVATION_JSON);
    await Deno.writeTextFile(
      out,
      formatActivationJson(result, {
        model: values.model,
        threshold: result.mode === "gate" ? undefined : result.threshold,
      }),
    );
    if (values.pt) {
      for (const [i, c] of result.counts.entries()) {
        await Deno.writeFile(join(dir, `activation_${i}.pt`), torchSave1d(c, `activation_${i}`));
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    if (values.json) {
      console.log(JSON.stringify({
        model: values.model,
        out,
        mode: result.mode,
        tokens: result.tokens,
        activeFraction: result.activeFraction,
        seconds,
      }));
    } else {
      console.log(`model: ${values.model} (mode ${result.mode})`);
      console.log(`tokens: ${result.tokens} in ${seconds.toFixed(1)} s`);
      result.activeFraction.forEach((f, i) => {
        console.log(
          `  layer ${String(i).padStart(3)}: ${(100 * f).toFixed(2)}% of neurons active per token`,
        );
      });
      console.log(`wrote ${out}`);
    }
    return 0;
  } catch (error) {
    if (
      error instanceof PowerInferError || error instanceof RangeError ||
      error instanceof SyntaxError
    ) {
      console.error(`error: ${error.message}`);
      return 1;
    }
    if (error instanceof Deno.errors.NotFound) {
      console.error(`error: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
