// Every CLI task answers a user mistake (bad option, missing or wrong kind of file, an output
// path it cannot write, an impossible number) with ONE line `error: ...` and exit status 1:
// no stack trace, no usage dump, no work done first, nothing left behind. The mains run in this
// process with console.error/log captured (much cheaper than spawning a deno per case).
import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { main as inspectMain } from "../src/cli/inspect.ts";
import { main as convertMain } from "../src/cli/convert.ts";
import { main as gpuIndexMain } from "../src/cli/gpu_index.ts";
import { main as profileMain } from "../src/cli/profile.ts";
import { quantizeMain } from "../src/cli/quantize.ts";
import { tokenizeMain } from "../src/cli/tokenize.ts";
import { main as fuzzMain } from "../tasks/fuzz.ts";
import { main as benchMain } from "../tasks/bench.ts";
import { sharedFixture } from "./_helpers.ts";

const TINY = sharedFixture("models/tiny/tiny.powerinfer.f16.gguf");
const HF = sharedFixture("models/tiny/hf");
const PREDICTOR = sharedFixture("models/tiny/predictor");

type Main = (args: string[]) => number | Promise<number>;

/** Runs `main` with stdout/stderr captured; returns the exit status and the stderr lines. */
async function capture(main: Main, args: string[]): Promise<{ code: number; err: string[] }> {
  const err: string[] = [];
  const { error, log } = console;
  console.error = (...a: unknown[]) => err.push(...a.map(String).join(" ").split("\n"));
  console.log = () => {};
  try {
    return { code: await main(args), err };
  } finally {
    console.error = error;
    console.log = log;
  }
}

/** The one-line failure every case must give; `pattern` pins what the line says. */
async function failsWithOneLine(main: Main, args: string[], pattern: RegExp): Promise<void> {
  const { code, err } = await capture(main, args);
  const lines = err.filter((l) => l.trim() !== "" && !/^\r?profiled /.test(l));
  equal(code, 1, `exit status for ${args.join(" ")}: ${lines.join(" | ")}`);
  equal(lines.length, 1, `stderr for ${args.join(" ")}:\n${lines.join("\n")}`);
  match(lines[0]!, /^error: [A-Z-]/);
  ok(!/\n\s+at /.test(lines[0]!), "no stack trace");
  match(lines[0]!, pattern);
}

/** The names in `dir` (to see that nothing, not even a temp file, was left behind). */
function names(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

const tokenize: Main = (a) => tokenizeMain(a, () => {}, console.error);
const quantize: Main = (a) => quantizeMain(a, () => {}, console.error);

Deno.test("inspect: usage mistakes and unreadable files are one line, exit 1", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    await failsWithOneLine(inspectMain, [], /Expected one file, found 0 .*--help/);
    await failsWithOneLine(inspectMain, ["--bogus", TINY], /Unknown option '--bogus'/);
    await failsWithOneLine(inspectMain, [`${dir}/none.gguf`], /Cannot open .*none\.gguf/);
    await failsWithOneLine(inspectMain, [dir], /not a regular file/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("tokenize: a missing file or a directory names the path and the reason", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    await failsWithOneLine(
      tokenize,
      ["-m", `${dir}/none.gguf`, "hi"],
      /Cannot read file ".*none\.gguf": no such file or directory/,
    );
    await failsWithOneLine(tokenize, ["-m", dir, "hi"], /it is a directory, expected a file/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("quantize: bad input and output paths fail before any work, leaving nothing", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    await failsWithOneLine(
      quantize,
      ["--no-progress", TINY, `${dir}/missing/out.gguf`, "Q4_0"],
      /Cannot write ".*missing\/out\.gguf": directory ".*missing" does not exist/,
    );
    await failsWithOneLine(
      quantize,
      ["--no-progress", TINY, dir, "Q4_0"],
      /Cannot write ".*": it is a directory/,
    );
    await failsWithOneLine(
      quantize,
      ["--no-progress", dir, `${dir}/out.gguf`, "Q4_0"],
      /Cannot read input ".*": it is a directory/,
    );
    await failsWithOneLine(
      quantize,
      ["--no-progress", "--threads", "x", TINY, `${dir}/out.gguf`, "Q4_0"],
      /Invalid --threads x: expected an integer in 0\.\.1024/,
    );
    deepStrictEqual(names(dir), []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("convert: wrong directories and unwritable outputs are one line, exit 1", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    await failsWithOneLine(convertMain, ["--bogus"], /Unknown option '--bogus'.*--help/);
    await failsWithOneLine(
      convertMain,
      ["--outfile", `${dir}/out.gguf`, `${HF}/config.json`, PREDICTOR],
      /Model directory ".*config\.json" is a file: give the directory/,
    );
    await failsWithOneLine(
      convertMain,
      ["--outfile", `${dir}/out.gguf`, `${dir}/nohf`, PREDICTOR],
      /Cannot read model directory ".*nohf": no such file or directory/,
    );
    await failsWithOneLine(
      convertMain,
      ["--outfile", `${dir}/out.gguf`, HF, `${dir}/nopred`],
      /Cannot read predictor directory ".*nopred": no such file or directory/,
    );
    await failsWithOneLine(
      convertMain,
      ["--outfile", `${dir}/missing/out.gguf`, HF, PREDICTOR],
      /directory ".*missing" does not exist/,
    );
    await failsWithOneLine(
      convertMain,
      ["--outfile", dir, HF, PREDICTOR],
      /Cannot write ".*": it is a directory/,
    );
    deepStrictEqual(names(dir), []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("convert: an output path that is a checkpoint file is refused, the checkpoint kept", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const hf = `${dir}/hf`;
    Deno.mkdirSync(hf);
    for (const e of Deno.readDirSync(HF)) Deno.copyFileSync(`${HF}/${e.name}`, `${hf}/${e.name}`);
    const before = Deno.statSync(`${hf}/pytorch_model.bin`).size;
    await failsWithOneLine(
      convertMain,
      ["--outfile", `${hf}/pytorch_model.bin`, hf, PREDICTOR],
      /Output path ".*pytorch_model\.bin" would overwrite input file .*choose another --outfile/,
    );
    await failsWithOneLine(
      convertMain,
      ["--outfile", `${PREDICTOR}/model_0.pt`, hf, PREDICTOR],
      /would overwrite input file/,
    );
    equal(Deno.statSync(`${hf}/pytorch_model.bin`).size, before);
    // An earlier GGUF output in the model directory may be replaced.
    equal(await convertMain(["--outfile", `${hf}/out.gguf`, hf, PREDICTOR]), 0);
    equal(await convertMain(["--outfile", `${hf}/out.gguf`, hf, PREDICTOR]), 0);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("convert: an interrupt (Ctrl-C) stops before the next tensor and leaves nothing", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const interrupt = new AbortController();
    interrupt.abort();
    await failsWithOneLine(
      (a) => convertMain(a, interrupt.signal),
      ["--outfile", `${dir}/out.gguf`, HF, PREDICTOR],
      /Interrupted before tensor "token_embd\.weight"; no output written/,
    );
    deepStrictEqual(names(dir), []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("gpu-index: impossible budgets and unwritable outputs are one line, exit 1", async () => {
  const dir = Deno.makeTempDirSync();
  const base = ["-m", TINY];
  try {
    await failsWithOneLine(gpuIndexMain, [], /-m MODEL is required .*--help/);
    await failsWithOneLine(
      gpuIndexMain,
      [...base, "--vram-budget", "-1"],
      /argument is ambiguous.*--vram-budget=-XYZ/,
    );
    await failsWithOneLine(
      gpuIndexMain,
      [...base, "--vram-budget", "1e30", "--out", `${dir}/x.gpuidx`],
      /Invalid --vram-budget 1e30: expected a number in 0\.\.8388607 \(GiB\) \(see/,
    );
    await failsWithOneLine(
      gpuIndexMain,
      [...base, "--neurons", "1.5", "--out", `${dir}/x.gpuidx`],
      /Invalid --neurons 1\.5: expected an integer >= 0/,
    );
    await failsWithOneLine(
      gpuIndexMain,
      [...base, "--neurons", "8", "--batch", "0", "--out", `${dir}/x.gpuidx`],
      /Invalid --batch 0: expected an integer >= 1/,
    );
    await failsWithOneLine(
      gpuIndexMain,
      [...base, "--vram-budget", "0", "--out", `${dir}/x.gpuidx`],
      /VRAM budget 0 B is too small/,
    );
    await failsWithOneLine(
      gpuIndexMain,
      [...base, "--vram-budget", "1", "--out", `${dir}/missing/x.gpuidx`],
      /directory ".*missing" does not exist/,
    );
    await failsWithOneLine(
      gpuIndexMain,
      [...base, "--vram-budget", "1", "--out", dir],
      /Cannot write ".*": it is a directory/,
    );
    deepStrictEqual(names(dir), []);
    // --out naming the model (or any file that is not an index) is refused; an index may be
    // replaced.
    const model = `${dir}/m.gguf`;
    Deno.copyFileSync(TINY, model);
    const act = sharedFixture("models/tiny/activation");
    const gi = ["-m", model, "--activation", act, "--vram-budget", "1"];
    await failsWithOneLine(
      gpuIndexMain,
      [...gi, "--out", model],
      /Output ".*m\.gguf" exists and is a powerinfer-model file, not a GPU index/,
    );
    Deno.writeTextFileSync(`${dir}/notes.txt`, "keep me");
    await failsWithOneLine(
      gpuIndexMain,
      [...gi, "--out", `${dir}/notes.txt`],
      /Output ".*notes\.txt" exists and is not a GPU index/,
    );
    equal(Deno.readTextFileSync(`${dir}/notes.txt`), "keep me");
    equal(Deno.statSync(model).size, Deno.statSync(TINY).size);
    equal((await capture(gpuIndexMain, [...gi, "--out", `${dir}/x.gpuidx`])).code, 0);
    equal((await capture(gpuIndexMain, [...gi, "--out", `${dir}/x.gpuidx`])).code, 0);
    await failsWithOneLine(
      gpuIndexMain,
      ["-m", `${dir}/x.gpuidx`, "--activation", act, "--vram-budget", "1", "--no-write"],
      /is a GPU-index file, not a model: pass the PowerInfer model with -m/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("profile: a directory as text and a file as --out fail before profiling", async () => {
  const dir = Deno.makeTempDirSync();
  const text = `${dir}/text.txt`;
  Deno.writeTextFileSync(text, "hello");
  try {
    await failsWithOneLine(
      profileMain,
      ["-m", TINY, "-f", dir, "--out", `${dir}/act`],
      /Cannot read text ".*": it is a directory/,
    );
    await failsWithOneLine(
      profileMain,
      ["-m", TINY, "-f", text, "--out", text],
      /Cannot create output directory ".*text\.txt": ".*text\.txt" is a file, not a directory/,
    );
    await failsWithOneLine(
      profileMain,
      ["-m", TINY, "-f", text, "--out", `${text}/sub/dir`],
      /Cannot create output directory ".*sub\/dir": ".*text\.txt" is a file, not a directory/,
    );
    await failsWithOneLine(
      profileMain,
      ["-m", TINY, "-f", text, "--out", `${dir}/act`, "--max-tokens", "0"],
      /Invalid --max-tokens 0: expected an integer >= 1/,
    );
    await failsWithOneLine(
      profileMain,
      ["-m", TINY, "-f", text, "--out", `${dir}/act`, "-c", "1099511627776"],
      /Cannot allocate the f16 KV cache for a context of 1099511627776 tokens: it needs [0-9.]+ TiB: use a smaller context size/,
    );
    // A model that fails to load creates no output directory.
    await failsWithOneLine(
      profileMain,
      ["-m", text, "-f", text, "--out", `${dir}/act`],
      /Bad magic/,
    );
    deepStrictEqual(names(dir), ["text.txt"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("fuzz task: bad options are one line, exit 1", async () => {
  const fuzz: Main = fuzzMain;
  await failsWithOneLine(fuzz, ["--bogus"], /Unknown option '--bogus'/);
  await failsWithOneLine(fuzz, ["--cases", "x"], /Bad --cases x/);
  await failsWithOneLine(fuzz, ["--target", "nope", "--cases", "1"], /Unknown target nope/);
  await failsWithOneLine(fuzz, ["--cases", "2", "--replay", "5"], /Bad --replay 5/);
});

Deno.test("bench task: --help prints the usage; bad options and a missing model are one line", async () => {
  const out: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => out.push(a.map(String).join(" "));
  try {
    equal(await benchMain(["--help"]), 0);
  } finally {
    console.log = log;
  }
  match(out.join("\n"), /^usage: deno task bench --shape NAME/);
  match(out.join("\n"), /tinyllama-1\.1b/);
  await failsWithOneLine(benchMain, ["--bogus"], /Unknown option '--bogus'/);
  await failsWithOneLine(benchMain, [], /Give --shape NAME or --model FILE/);
  await failsWithOneLine(benchMain, ["--shape", "huge"], /Unknown model shape "huge"/);
  await failsWithOneLine(benchMain, ["--model", "/nonexistent/m.gguf", "--no-dense"], /m\.gguf/);
});

Deno.test({
  name: "profile: a read-only --out directory fails before the run (needs a non-root user)",
  ignore: Deno.build.os === "windows" || Deno.uid() === 0,
  fn: async () => {
    const dir = Deno.makeTempDirSync();
    const text = `${dir}/text.txt`;
    Deno.writeTextFileSync(text, "hello");
    Deno.mkdirSync(`${dir}/ro`);
    Deno.chmodSync(`${dir}/ro`, 0o555);
    try {
      await failsWithOneLine(
        profileMain,
        ["-m", TINY, "-f", text, "--out", `${dir}/ro/act`],
        /Cannot create output directory ".*ro\/act": permission denied in ".*ro"/,
      );
    } finally {
      Deno.chmodSync(`${dir}/ro`, 0o755);
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
