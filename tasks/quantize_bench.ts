/**
 * `deno run -A tasks/quantize_bench.ts [--size-mb 1000] [--reps 3] [--dir /tmp/...] [--keep]
 * [--threads N] [--drop-all] [--json]`: throughput of quantizing an F16 PWRI model to Q4_0 against reading
 * the same file, measured in one run, interleaved over repetitions (issue 6: "at least as fast
 * as reading the file").
 *
 * Generates a synthetic ReLU-LLaMA F16 model of about `--size-mb` MB with make-model (tinyllama
 * widths, as many layers as fit) in `--dir` (default a fresh directory under /tmp, never the
 * repository), then per repetition:
 * - `read warm`: read() through the whole file in 8 MiB chunks, pages cached;
 * - `read cold`: the same after dropping the file's pages (posix_fadvise DONTNEED through
 *   `dd iflag=nocache`; with `--drop-all`, `sync; echo 1 > /proc/sys/vm/drop_caches`, which
 *   also evicts everybody else's cache), i.e. from the disk; the `cached` column (fincore)
 *   shows the drop worked;
 * - `read O_DIRECT`: `dd iflag=direct bs=8M`, bypassing the page cache;
 * - `read+write O_DIRECT`: that read while a second dd writes an output-sized file with O_DIRECT
 *   and fdatasync (copied from the cached Q4_0 output): the plain way to move the bytes a
 *   quantizer must move on one disk, each dd with one request in flight;
 * - `quantize warm` / `quantize cold`: `quantizeModel(in, out, "Q4_0")` end to end (plan, input
 *   reads, kernels, O_DIRECT writes, fdatasync, temp file + rename) with its default input
 *   path (`inputIo: "auto"`: the mapping when cached, buffered pread()s otherwise), input
 *   cached / dropped first; `quantize cold mmap` / `quantize cold direct`: cold with
 *   `inputIo: "mmap"` (page faults on the mapping) / `"direct"` (O_DIRECT reads). The output
 *   is deleted and synced (outside the timed region) before the next measurement.
 * MB/s are of input bytes (10^6). Deletes everything it created unless `--keep`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import process from "node:process";
import { makeModel, MODEL_SHAPES, type ModelShape } from "../src/bench/make_model.ts";
import { quantizeModel } from "../src/quant/quantize_model.ts";
import { getThreads, setThreads } from "../ffi/ops.ts";
import { reportError } from "../src/cli/report_error.ts";

const USAGE =
  `usage: deno task bench:quantize [--size-mb 1000] [--reps 3] [--dir DIR] [--keep] [--threads N]
                              [--drop-all] [--json]
Quantizing a generated F16 model to Q4_0 against reading the same file (MB/s of input), warm and
cold, in one run; --drop-all empties the whole page cache (root) instead of the file's pages.`;

function parseOptions() {
  try {
    return parseArgs({
      args: Deno.args,
      options: {
        "size-mb": { type: "string", default: "1000" },
        reps: { type: "string", default: "3" },
        dir: { type: "string" },
        keep: { type: "boolean", default: false },
        threads: { type: "string" },
        json: { type: "boolean", default: false },
        "drop-all": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (error) {
    Deno.exit(reportError(error));
  }
}

const { values } = parseOptions();
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}

const CHUNK_BYTES = 8 << 20;

async function run(cmd: string, args: string[]): Promise<void> {
  const { code, stderr } = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" })
    .output();
  if (code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(stderr)}`);
  }
}

/** Drops the file's cached pages (posix_fadvise DONTNEED; the file has no dirty pages). */
async function dropCache(path: string): Promise<void> {
  if (values["drop-all"]) {
    await run("sync", []);
    await Deno.writeTextFile("/proc/sys/vm/drop_caches", "1\n");
    return;
  }
  await run("dd", [`if=${path}`, "iflag=nocache", "count=0", "status=none"]);
}

/** Fraction of the file's pages in the page cache (fincore), or NaN when unavailable. */
async function cachedFraction(path: string): Promise<number> {
  try {
    const { stdout } = await new Deno.Command("fincore", {
      args: ["--bytes", "--noheadings", "--output", "RES,SIZE", path],
      stdout: "piped",
      stderr: "null",
    }).output();
    const [res, size] = new TextDecoder().decode(stdout).trim().split(/\s+/).map(Number);
    return res! / size!;
  } catch {
    return NaN;
  }
}

function readThrough(path: string): number {
  using file = Deno.openSync(path, { read: true });
  const buf = new Uint8Array(CHUNK_BYTES);
  let total = 0;
  for (;;) {
    const n = file.readSync(buf);
    if (n === null) break;
    total += n;
  }
  return total;
}

interface Sample {
  seconds: number;
  cpuSeconds: number;
}

async function timed(fn: () => unknown): Promise<Sample> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const seconds = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { seconds, cpuSeconds: (c.user + c.system) / 1e6 };
}

const targetBytes = Number(values["size-mb"]) * 1e6;
const reps = Number(values.reps);
const base = MODEL_SHAPES["tinyllama-1.1b"]!;
// Bytes of one F16 layer (attention + FFN + predictor, roughly) and of the embeddings/output.
const layerBytes = 2 *
  (2 * base.nEmbd * base.nEmbd + 2 * base.nEmbd * (base.nEmbd / base.nHead) * base.nHeadKv +
    3 * base.nEmbd * base.nFf);
const vocabBytes = 2 * 2 * 32000 * base.nEmbd;
const shape: ModelShape = {
  ...base,
  name: "quantize-bench",
  nLayer: Math.max(1, Math.round((targetBytes - vocabBytes) / layerBytes)),
};

const dir = values.dir ?? await Deno.makeTempDir({ dir: "/tmp", prefix: "quantize_bench_" });
await Deno.mkdir(dir, { recursive: true });
const input = join(dir, "model.f16.gguf");
const output = join(dir, "model.q4_0.gguf");
if (values.threads) setThreads(Number(values.threads));

try {
  let size: number;
  try {
    size = Deno.statSync(input).size;
  } catch {
    const t0 = performance.now();
    const made = await makeModel({ shape, out: input, type: "f16", statsDir: null });
    size = made.byteLength;
    console.error(
      `made ${input}: ${(size / 1e6).toFixed(0)} MB, ${shape.nLayer} layers, in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
  }
  await run("sync", []);

  const names = [
    "read warm",
    "read cold",
    "read O_DIRECT",
    "read+write O_DIRECT",
    "quantize warm",
    "quantize cold",
    "quantize cold mmap",
    "quantize cold direct",
  ];
  const samples = new Map<string, Sample[]>(names.map((n) => [n, []]));
  const cached = new Map<string, number[]>(names.map((n) => [n, []]));
  const record = async (name: string, cold: boolean, fn: () => unknown) => {
    if (cold) await dropCache(input);
    else readThrough(input); // warm it
    cached.get(name)!.push(await cachedFraction(input));
    samples.get(name)!.push(await timed(fn));
  };
  const readDirect = () =>
    run("dd", [`if=${input}`, "of=/dev/null", "bs=8M", "iflag=direct", "status=none"]);
  const quantizeOnce = async (inputIo: "auto" | "mmap" | "direct" = "auto") => {
    await quantizeModel(input, output, "Q4_0", { inputIo });
  };
  let outputBytes = 0;
  for (let r = 0; r < reps; r++) {
    await record("read warm", false, () => readThrough(input));
    await record("quantize warm", false, () => quantizeOnce());
    outputBytes = Deno.statSync(output).size;
    const scratch = join(dir, "write_baseline.bin");
    readThrough(output); // the copy's source comes from the page cache, not the disk
    await record("read+write O_DIRECT", true, () =>
      Promise.all([
        readDirect(),
        run("dd", [
          `if=${output}`,
          `of=${scratch}`,
          "bs=8M",
          "oflag=direct",
          "conv=fdatasync",
          "status=none",
        ]),
      ]));
    await Deno.remove(scratch);
    await Deno.remove(output);
    await run("sync", []);
    await record("read cold", true, () => readThrough(input));
    await record("read O_DIRECT", true, readDirect);
    await record("quantize cold", true, () => quantizeOnce());
    await Deno.remove(output);
    await run("sync", []);
    await record("quantize cold mmap", true, () => quantizeOnce("mmap"));
    await Deno.remove(output);
    await run("sync", []);
    await record("quantize cold direct", true, () => quantizeOnce("direct"));
    await Deno.remove(output);
    await run("sync", []);
  }

  const mbps = (s: Sample) => size / 1e6 / s.seconds;
  const rows = names.map((name) => {
    const ss = samples.get(name)!;
    const rates = ss.map(mbps).sort((a, b) => a - b);
    return {
      name,
      mbPerSecond: rates[rates.length >> 1]!,
      min: rates[0]!,
      max: rates[rates.length - 1]!,
      seconds: ss.map((s) => s.seconds),
      cpuSeconds: ss.map((s) => s.cpuSeconds),
      cachedBefore: cached.get(name)!,
    };
  });
  const median = (name: string) => rows.find((r) => r.name === name)!.mbPerSecond;
  const ratios = {
    "quantize warm / read warm": median("quantize warm") / median("read warm"),
    "quantize warm / read cold": median("quantize warm") / median("read cold"),
    "quantize cold / read cold": median("quantize cold") / median("read cold"),
    "quantize cold / read O_DIRECT": median("quantize cold") / median("read O_DIRECT"),
    "quantize cold mmap / read cold": median("quantize cold mmap") / median("read cold"),
    "quantize cold direct / read O_DIRECT": median("quantize cold direct") /
      median("read O_DIRECT"),
    "quantize cold direct / read+write O_DIRECT": median("quantize cold direct") /
      median("read+write O_DIRECT"),
    "quantize cold / read+write O_DIRECT": median("quantize cold") /
      median("read+write O_DIRECT"),
  };
  if (values.json) {
    console.log(JSON.stringify(
      { inputBytes: size, outputBytes, threads: getThreads(), reps, rows, ratios },
      null,
      1,
    ));
  } else {
    console.log(
      `input ${(size / 1e6).toFixed(0)} MB F16 -> ${
        (outputBytes / 1e6).toFixed(0)
      } MB Q4_0, ${getThreads()} threads, ${reps} reps (median [min..max] MB/s of input)`,
    );
    for (const r of rows) {
      const cpu = r.cpuSeconds.map((c) => c.toFixed(2)).join("/");
      const cachedPct = r.cachedBefore.map((c) => (c * 100).toFixed(0)).join("/");
      console.log(
        `${r.name.padEnd(20)} ${r.mbPerSecond.toFixed(0).padStart(6)} [${r.min.toFixed(0)}..${
          r.max.toFixed(0)
        }]  wall ${
          r.seconds.map((s) => s.toFixed(2)).join("/")
        } s  cpu ${cpu} s  cached ${cachedPct}%`,
      );
    }
    for (const [k, v] of Object.entries(ratios)) console.log(`${k.padEnd(36)} ${v.toFixed(2)}`);
  }
} finally {
  await Deno.remove(output).catch(() => {});
  if (!values.keep) await Deno.remove(dir, { recursive: true }).catch(() => {});
}
