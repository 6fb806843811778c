/**
 * `deno task convert`: Hugging Face checkpoint + PowerInfer predictors → PowerInfer GGUF, with no
 * Python. Replaces PowerInfer's `convert.py` (LLaMA family), `convert-dense.py` (`--dense`) and
 * `convert-hf-to-powerinfer-gguf.py` (Falcon); the output is byte for byte what they write.
 *
 * @module
 */

import { parseCliArgs } from "./options.ts";
import { reportError, usageLine } from "./report_error.ts";
import { ConvertError } from "../errors.ts";
import { formatBytes, progressBar, statusLineWriter } from "./progress.ts";
import { checkOutputPath } from "../gguf/output_file.ts";
import { type GgmlType, ggmlTypeName } from "../gguf/types.ts";
import { writeGguf } from "../gguf/writer.ts";
import { checkOutFileIsNotInput, type ConvertOutType, planConversion } from "../convert/convert.ts";

const USAGE =
  `usage: deno task convert [--outtype f32|f16|q4_0] [--dense] --outfile OUT MODEL_DIR [PREDICTOR_DIR]

Converts a Hugging Face model directory (config.json, *.safetensors or pytorch_model*.bin,
tokenizer.model or tokenizer.json) and a PowerInfer predictor directory (model_<layer>.pt +
config.json with sparse_threshold) into a PowerInfer GGUF (magic PWRI).

Supported: LLaMA family with ReLU (ReLU-LLaMA, Mistral-style GQA, Bamboo) and ReLU Falcon.

options:
  -h, --help          show this help and exit
      --outtype T     f16 (default; 2-D weights F16, 1-D F32), f32, or q4_0 (f16, then
                      quantized like PowerInfer's quantize Q4_0)
      --dense         write a plain llama.cpp GGUF (ffn_down, no predictors; LLaMA only)
      --outfile OUT   output path (required); written to a temp file, renamed when complete
`;

/**
 * Runs the CLI; returns the exit code.
 *
 * @param args Command-line arguments.
 * @param signal Stops the conversion before the next tensor (Ctrl-C when run as a program);
 *   the temporary file is removed and nothing is written.
 */
export async function main(args: string[], signal?: AbortSignal): Promise<number> {
  const parsed = parseCliArgs("convert", USAGE, {
    args,
    options: {
      help: { type: "boolean", short: "h" },
      outtype: { type: "string" },
      dense: { type: "boolean" },
      outfile: { type: "string" },
    },
    allowPositionals: true,
    strict: true,
  });
  if (typeof parsed === "number") return parsed;
  const { values, positionals } = parsed;
  const outtype = (values.outtype ?? "f16") as ConvertOutType;
  if (!["f32", "f16", "q4_0"].includes(outtype)) {
    console.error(
      usageLine(`--outtype must be f32, f16 or q4_0, got "${values.outtype}"`, "convert"),
    );
    return 1;
  }
  if (!values.outfile || positionals.length < 1 || positionals.length > 2) {
    console.error(
      usageLine("Give --outfile OUT, MODEL_DIR and (unless --dense) PREDICTOR_DIR", "convert"),
    );
    return 1;
  }
  const [modelDir, predictorDir] = positionals as [string, string | undefined];
  const dense = values.dense ?? false;
  if (dense && predictorDir) {
    console.error(usageLine("--dense writes no predictors: drop PREDICTOR_DIR", "convert"));
    return 1;
  }
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  const err = (s: string) => Deno.stderr.writeSync(enc.encode(s));
  const status = statusLineWriter(Deno.stderr);
  try {
    checkOutputPath(values.outfile);
    checkOutFileIsNotInput(values.outfile, modelDir, predictorDir);
    using plan = planConversion(modelDir, { outtype, dense, predictorDir });
    const total = plan.tensors.length;
    err(
      `converting ${modelDir} (${plan.arch}, ${total} tensors, ${outtype}) -> ${values.outfile} [${plan.magic}]\n`,
    );
    let current = "";
    const tensors = plan.tensors.map((t, i) => ({
      ...t,
      data: () => {
        if (signal?.aborted) {
          throw new ConvertError(`Interrupted before tensor "${t.name}"; no output written`);
        }
        current = `[${i + 1}/${total}] ${t.name} ${ggmlTypeName(t.type)} [${t.ne}]`;
        if (!tty) err(`${current}\n`);
        return t.data();
      },
    }));
    const started = performance.now();
    await writeGguf(values.outfile, { magic: plan.magic, metadata: plan.metadata, tensors }, {
      onProgress: (_done, _n, bytesDone, bytesTotal) => {
        if (!tty) return;
        const frac = bytesTotal > 0 ? bytesDone / bytesTotal : 1;
        status(
          `${progressBar(frac, performance.now() - started)} ${
            (frac * 100).toFixed(1).padStart(5)
          }% ${current}`,
        );
      },
    });
    if (tty) err("\n");
    const size = (await Deno.stat(values.outfile)).size;
    const counts = new Map<string, number>();
    for (const t of plan.tensors) {
      const k = ggmlTypeName(t.type as GgmlType);
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    err(
      `wrote ${values.outfile}: ${formatBytes(size)}, ${total} tensors (${
        [...counts].map(([k, n]) => `${n} ${k}`).join(", ")
      }) in ${((performance.now() - started) / 1000).toFixed(1)} s\n`,
    );
    return 0;
  } catch (error) {
    if (tty) err("\n");
    return reportError(error);
  }
}

if (import.meta.main) {
  const interrupt = new AbortController();
  const onSignal = () => interrupt.abort();
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGINT", onSignal);
  Deno.exit(await main(Deno.args, interrupt.signal));
}
