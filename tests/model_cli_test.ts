// `deno task run` as a user meets it: every mistake (bad number, unknown flag, missing or wrong
// kind of file, a prompt that cannot fit, a context too large to allocate) is ONE `error:` line
// on stderr, exit status 1, no stack trace and no text on stdout. The CLI's main runs in this
// process with console and stdout captured (much cheaper than a deno per case).
import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { main } from "../src/cli/run.ts";
import { gpuIndexLayer, writeGpuIndexSync } from "../src/gpu_index/gpuidx.ts";
import { openGguf } from "../src/gguf/open.ts";
import { writeGguf } from "../src/gguf/writer.ts";
import { hasSharedFixture, sharedFixture } from "./_helpers.ts";

const DEMO = new URL("../assets/fortune-relu.q4.powerinfer.gguf", import.meta.url).pathname;

/** Runs the CLI with stderr lines, console.log and stdout bytes captured. */
async function capture(args: string[]): Promise<{ code: number; err: string[]; out: string }> {
  const err: string[] = [];
  let out = "";
  const { error, log } = console;
  const write = Deno.stdout.write;
  const decoder = new TextDecoder();
  console.error = (...a: unknown[]) => err.push(...a.map(String).join(" ").split("\n"));
  console.log = (...a: unknown[]) => out += a.map(String).join(" ") + "\n";
  Deno.stdout.write = (p: Uint8Array) => {
    out += decoder.decode(p);
    return Promise.resolve(p.length);
  };
  try {
    return { code: await main(args), err, out };
  } finally {
    console.error = error;
    console.log = log;
    Deno.stdout.write = write;
  }
}

/** The failure every case must give: exit 1, one `error:` line matching `pattern`, no output. */
async function failsWithOneLine(args: string[], pattern: RegExp): Promise<void> {
  const { code, err, out } = await capture(args);
  const lines = err.filter((l) => l.trim() !== "" && !l.startsWith("warning: "));
  equal(code, 1, `exit status for ${args.join(" ")}: ${lines.join(" | ")}`);
  equal(lines.length, 1, `stderr for ${args.join(" ")}:\n${lines.join("\n")}`);
  match(lines[0]!, /^error: /);
  ok(!/\bat .*\.ts:\d+/.test(lines[0]!), "no stack trace");
  match(lines[0]!, pattern);
  equal(out, "", `nothing on stdout for ${args.join(" ")}`);
}

Deno.test("run: bad numbers are one line naming the option and what it accepts", async () => {
  await failsWithOneLine(["-n", "-3"], /Invalid --n-predict -3: expected an integer >= -2/);
  await failsWithOneLine(["-n", "1.5"], /Invalid --n-predict 1\.5: expected an integer/);
  await failsWithOneLine(["-c", "-1"], /Invalid --ctx-size -1: expected an integer >= 0/);
  await failsWithOneLine(["-b", "0"], /Invalid --batch-size 0: expected an integer >= 1/);
  await failsWithOneLine(["-t", "abc"], /Invalid --threads abc/);
  await failsWithOneLine(["-t", "5000"], /Invalid --threads 5000: expected an integer <= 1024/);
  await failsWithOneLine(["--top-p", "2"], /Invalid --top-p 2: expected a number in 0\.\.1/);
  await failsWithOneLine(["--min-p", "-0.5"], /Invalid --min-p -0\.5: expected a number in 0\.\.1/);
  await failsWithOneLine(["--temp", "hot"], /Invalid --temp hot: expected a number/);
  await failsWithOneLine(["--seed", "-7"], /Invalid --seed -7: expected an integer in -1\.\./);
  await failsWithOneLine(["--keep", "-2"], /Invalid --keep -2/);
  await failsWithOneLine(["--repeat-last-n", "-5"], /Invalid --repeat-last-n -5/);
  await failsWithOneLine(["-l", "5x"], /Invalid --logit-bias 5x/);
  await failsWithOneLine(["--rope-scale", "0"], /Invalid --rope-scale 0: expected a number > 0/);
  await failsWithOneLine(["--rope-freq-scale", "0"], /RoPE base 10000 and scale 0 must be finite/);
});

Deno.test("run: unknown flags and bad --prompt-ids are one line pointing at --help", async () => {
  await failsWithOneLine(
    ["--bogus"],
    /^error: unknown argument: --bogus \(see deno task run --help\)$/,
  );
  await failsWithOneLine(["--prompt-ids", "1,,2"], /Invalid --prompt-ids 1,,2: .* found ""/);
  await failsWithOneLine(["--prompt-ids", "-5"], /Invalid --prompt-ids -5/);
  await failsWithOneLine(["--prompt-ids", "1,x"], /found "x"/);
  // in range for the syntax, outside the demo model's 1024-token vocabulary: caught before the
  // summary or the prompt echo
  await failsWithOneLine(
    ["--prompt-ids", "1,99999"],
    /token id 99999 is outside the vocabulary \[0, 1024\)/,
  );
});

Deno.test("run: a context too large to allocate names the memory it needs", async () => {
  await failsWithOneLine(
    ["-c", "4000000000", "-n", "1"],
    /Cannot allocate the f16 KV cache for a context of 4000000000 tokens: it needs 3\.7 TiB/,
  );
  await failsWithOneLine(
    ["-c", "4000000000", "-n", "1", "--memory-f32"],
    /f32 KV cache .* it needs 7\.5 TiB/,
  );
});

Deno.test("run: a prompt longer than the context fails before any output", async () => {
  const { code, err } = await capture(["-c", "1", "-p", "hello world foo", "-n", "2"]);
  equal(code, 1);
  // -c below 8 is raised to 8 with a warning, like main
  ok(err.some((l) => l.startsWith("warning: minimum context size is 8")), err.join("\n"));
  await failsWithOneLine(
    ["-c", "8", "-p", "hello world foo", "-n", "2"],
    /Prompt has 7 tokens but a context of 8 holds at most 4/,
  );
});

Deno.test("run: missing, empty-named and wrong kinds of files are one line", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "pi-run-cli-" });
  try {
    await failsWithOneLine(["-m", `${dir}/none.gguf`], /Cannot open .*none\.gguf/);
    await failsWithOneLine(
      ["-f", `${dir}/none.txt`],
      /Cannot read prompt file ".*none\.txt": no such file/,
    );
    await failsWithOneLine(["-f", dir], /Cannot read prompt file .*: it is a directory/);
    await failsWithOneLine(
      ["-m", sharedFixture("vocab/ggml-vocab-llama.gguf")],
      /holds no tensors \(a vocabulary-only GGUF\?\)/,
    );
    const idx = `${dir}/model.gpuidx`;
    writeGpuIndexSync(idx, { vramCapacity: 0, layers: [gpuIndexLayer(8, [1])] });
    await failsWithOneLine(["-m", idx], /is a GPU-index file, not a model/);
    const demo = await Deno.readFile(DEMO);
    const truncated = `${dir}/truncated.gguf`;
    await Deno.writeFile(truncated, demo.subarray(0, 100_000));
    await failsWithOneLine(["-m", truncated], /Truncated tensor data of "token_embd\.weight"/);
    // a tensor one row short, written whole by our GGUF writer
    using f = openGguf(DEMO);
    const name = "blk.1.ffn_up.weight";
    const wrong = `${dir}/wrong-shape.gguf`;
    await writeGguf(wrong, {
      magic: f.magic,
      metadata: [...f.metadata.values()],
      tensors: f.tensors.map((t) => {
        const short = t.name === name;
        const ne = short ? [t.ne[0]!, t.ne[1]! - 1] : t.ne;
        const rowBytes = t.byteLength / t.ne[1]!;
        return {
          name: t.name,
          type: t.type,
          ne,
          data: () => short ? f.tensorData(t).subarray(0, rowBytes * ne[1]!) : f.tensorData(t),
        };
      }),
    });
    await failsWithOneLine(
      ["-m", wrong],
      /Tensor "blk\.1\.ffn_up\.weight" has shape \[192, 1023\]: expected \[192, 1024\]/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("run: an empty -f prompt file starts from BOS", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "pi-run-cli-" });
  try {
    Deno.writeTextFileSync(`${dir}/empty.txt`, "");
    const { code, out, err } = await capture(["-f", `${dir}/empty.txt`, "-n", "2", "--json"]);
    equal(code, 0, err.join("\n"));
    const json = JSON.parse(out);
    deepStrictEqual(json.prompt_ids, [1]);
    equal(json.generated_ids.length, 2);
    // a 0-token prompt eval prints like printf does, never "Infinity"/"NaN"
    ok(!err.some((l) => /Infinity|NaN/.test(l)), err.join("\n"));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("run: --json is one object with prompt_ids, generated_ids, text and timings", async () => {
  const { code, out, err } = await capture(["--json", "-p", "A", "-n", "5", "--temp", "0"]);
  equal(code, 0, err.join("\n"));
  const lines = out.trimEnd().split("\n");
  equal(lines.length, 1, "one line of JSON on stdout");
  const json = JSON.parse(lines[0]!);
  deepStrictEqual(Object.keys(json), ["prompt_ids", "generated_ids", "text", "timings"]);
  deepStrictEqual(json.prompt_ids, [1, 319]);
  equal(json.generated_ids.length, 5);
  ok(json.generated_ids.every((id: unknown) => Number.isInteger(id)));
  equal(typeof json.text, "string");
  ok(json.text.startsWith(" man is a"), json.text);
  for (
    const key of [
      "load_ms",
      "sample_ms",
      "prompt_eval_ms",
      "prompt_tokens",
      "prompt_tokens_per_second",
      "eval_ms",
      "eval_runs",
      "eval_tokens_per_second",
      "total_ms",
    ]
  ) {
    ok(Number.isFinite(json.timings[key]) && json.timings[key] >= 0, `timings.${key}`);
  }
  equal(json.timings.prompt_tokens, 2);
  equal(json.timings.eval_runs, 4);
  ok(err.some((l) => l.startsWith("llama_print_timings:        eval time =")));
});

Deno.test("run: --help prints the usage with every flag of issue 5 and exits 0", async () => {
  const { code, out } = await capture(["--help"]);
  equal(code, 0);
  for (
    const flag of [
      "-m, --model",
      "-p, --prompt",
      "-f, --file",
      "-n, --n-predict",
      "-t, --threads",
      "-c, --ctx-size",
      "-b, --batch-size",
      "--temp",
      "--top-k",
      "--top-p",
      "--min-p",
      "--repeat-penalty",
      "--repeat-last-n",
      "--seed",
      "--ignore-eos",
      "--prompt-ids",
      "--json",
    ]
  ) ok(out.includes(flag), flag);
});

Deno.test("run: -t 0 and -t -1 mean every hardware thread, like main", async () => {
  for (const t of ["0", "-1"]) {
    const { code, err } = await capture(["-t", t, "-n", "1", "--json"]);
    equal(code, 0, err.join("\n"));
  }
});

Deno.test({
  name: "run: no arguments prints the demo model's fortune (PowerInfer main's greedy text)",
  ignore: !hasSharedFixture("fortune-relu/reference.json"),
  async fn() {
    const reference = JSON.parse(
      await Deno.readTextFile(sharedFixture("fortune-relu/reference.json")),
    );
    const run = reference.runs
      .find((r: { model: string; env: object }) =>
        r.model === "fortune-relu.q4.powerinfer.gguf" && Object.keys(r.env).length === 0
      )
      .results.find((r: { prompt: string }) => r.prompt === " A");
    deepStrictEqual(run.prompt_ids, [1, 319]); // the demo's "A" with the SentencePiece space
    const { code, out, err } = await capture([]);
    equal(code, 0, err.join("\n"));
    // the echoed prompt, then main's text (a fortune: a line and its "-- author")
    equal(out, `A ${run.generated_text_t1}\n`);
    match(out, /\n\t\t-- \S/);
    ok(err.includes(" [end of text]"), err.join("\n"));
    ok(err.some((l) => l.startsWith("llama_print_timings:       total time =")));
  },
});

Deno.test("run: Ctrl-C stops an endless generation, prints the timings and exits 130", async () => {
  const cli = new URL("../src/cli/run.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, "-n", "-1", "--ignore-eos", "-c", "32"],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  let text = "";
  const decoder = new TextDecoder();
  while (text.length < 40) { // some generated text is out: the stream is running
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value);
  }
  child.kill("SIGINT");
  while (!(await reader.read()).done) { /* drain */ }
  const status = await child.status;
  const err = decoder.decode(await new Response(child.stderr).arrayBuffer());
  equal(status.code, 130, err);
  ok(text.startsWith("A man is a"), text);
  match(err, /\ninterrupted\n/);
  match(err, /llama_print_timings: {8}eval time = .* \/ +\d+ runs/);
  ok(!/error:|\bat .*\.ts:\d+/.test(err), err);
});
