/**
 * `deno task profile`: runs a PowerInfer model over a text and writes per-layer activation
 * counts (`activation_counts.json`, format in src/gpu_index/stats.ts) for `deno task gpu-index`
 * and the engine's GPU-index policy.
 *
 * @module
 */

import { reportError, usageLine } from "./report_error.ts";
import { numberOption, parseCliArgs } from "./options.ts";
import { FileWriteError } from "../errors.ts";
import {
  checkInputFile,
  checkOutputDir,
  fsErrorReason,
  writeFileAtomicSync,
} from "../gguf/output_file.ts";
import { dirname, join } from "node:path";
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

/** Creates the output directory (and its parents); a file in the way is a clear error. */
function makeOutputDir(dir: string): void {
  try {
    Deno.mkdirSync(dir, { recursive: true });
  } catch (error) {
    const reason = error instanceof Deno.errors.AlreadyExists
      ? "a file of that name is in the way (give a directory)"
      : fsErrorReason(error);
    throw new FileWriteError(`Cannot create output directory "${dir}": ${reason}`, {
      cause: error,
    });
  }
}

/** Runs the CLI; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const parsed = parseCliArgs("profile", USAGE, {
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
  });
  if (typeof parsed === "number") return parsed;
  const { values } = parsed;
  if (!values.model || !values.file) {
    console.error(usageLine("-m MODEL and -f TEXT are required", "profile"));
    return 1;
  }
  const mode = values.mode ?? "gate";
  if (mode !== "gate" && mode !== "predictor") {
    console.error(usageLine(`--mode must be gate or predictor, found ${mode}`, "profile"));
    return 1;
  }
  let numbers;
  try {
    const positive = { integer: true, min: 1 };
    numbers = {
      nCtx: numberOption("ctx-size", values["ctx-size"], positive),
      threads: numberOption("threads", values.threads, positive),
      maxTokens: numberOption("max-tokens", values["max-tokens"], positive),
    };
  } catch (error) {
    console.error(usageLine((error as Error).message, "profile"));
    return 1;
  }
  try {
    checkInputFile(values.file, "text");
    const dir = values.out ?? join(dirname(values.model), "activation");
    checkOutputDir(dir); // before the run, so a bad --out does not waste it
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
      ...numbers,
      onProgress: values.json ? undefined : (done, total) => {
        Deno.stderr.writeSync(new TextEncoder().encode(`\rprofiled ${done}/${total} tokens`));
      },
    });
    if (!values.json) console.error();
    makeOutputDir(dir);
    const out = join(dir, ACTIVATION_JSON);
    writeFileAtomicSync(
      out,
      new TextEncoder().encode(formatActivationJson(result, {
        model: values.model,
        threshold: result.mode === "gate" ? undefined : result.threshold,
      })),
    );
    if (values.pt) {
      for (const [i, c] of result.counts.entries()) {
        writeFileAtomicSync(join(dir, `activation_${i}.pt`), torchSave1d(c, `activation_${i}`));
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
    return reportError(error);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
