/**
 * `deno task bench` — llama-bench-style speed report of the engine: prompt processing (pp) and
 * generation (tg) tokens/s, mean ± sd over repetitions, 1 and all threads, sparse (PWRI with its
 * predictor) vs dense (the same weights with every FFN neuron computed), and the fraction of the
 * memory-read roofline reached by generation (bytes the token touches ÷ measured bandwidth).
 * The sparse token's FFN bytes are scattered rows, which one core reads more slowly than a
 * stream: the bench also measures that gathered read (each calibration token's active rows of
 * every layer, in the model file's own mapping, without arithmetic) and reports the roofline
 * with the FFN bytes at that speed (`rooflineGathered`, `gather_bandwidth_gbs` in `--json`),
 * and the sparse/dense ratio those two read speeds allow (`attainable_sparse_dense`).
 *
 * ```
 * deno task bench --shape tinyllama-1.1b [--type q4_0|f16] [--sparsity 0.87] [--seed 1]
 *                 [--model FILE] [--dense-model FILE] [--threads N] [--reps 3] [--pp 49] [--tg 64]
 *                 [--cache DIR] [--no-dense] [--json]
 * ```
 * With `--shape` the sparse model and its dense twin (magic GGUF, `ffn_down` untransposed, no
 * predictor: the "same model as a dense llama.cpp file") are generated once by make-model into
 * the cache dir (default `$XDG_CACHE_HOME/powerinfer-deno/bench` or `~/.cache/...`, outside the
 * repo). With `--model` only, dense runs the same file with the predictor off (threshold −∞,
 * all neurons computed). `--json` prints `{ sparse_tg, dense_tg, sparse_pp, dense_pp, ... }` for
 * the largest thread count (tokens/s).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { bandwidthGather, bandwidthRead, physicalCores, setThreads } from "../ffi/ops.ts";
import { MODEL_SHAPES, modelShape } from "../src/bench/make_model.ts";
import { openGguf } from "../src/gguf/open.ts";
import { loadModel } from "../src/model/model.ts";
import { reportError } from "../src/cli/report_error.ts";

const USAGE = `usage: deno task bench --shape NAME [--type q4_0|f16] [--sparsity 0.87] [--seed 1]
                       [--threads N] [--reps 3] [--pp 49] [--tg 64] [--cache DIR] [--no-dense] [--json]
       deno task bench --model FILE [--dense-model FILE] [same options]
Prompt (pp) and generation (tg) tokens/s, sparse vs dense, 1 and N threads (default: the
physical cores), with the fraction of the memory-read roofline reached by generation.
Shapes (generated once into --cache): ${Object.keys(MODEL_SHAPES).join(", ")}.`;

interface Stat {
  mean: number;
  sd: number;
}

interface BenchRow {
  model: string;
  mode: "sparse" | "dense";
  threads: number;
  test: string;
  tokensPerSecond: Stat;
  /** Generation only: bytes one token reads, and the fraction of the roofline reached. */
  bytesPerToken?: number;
  roofline?: number;
  /**
   * Sparse generation only: the fraction reached of a roofline that reads the FFN's active rows
   * at the measured gathered-read speed (and the other bytes at the streaming speed).
   */
  rooflineGathered?: number;
}

function stat(xs: number[]): Stat {
  const mean = xs.reduce((s, v) => s + v, 0) / xs.length;
  const sd = xs.length > 1
    ? Math.sqrt(xs.reduce((s, v) => s + (v - mean) ** 2, 0) / (xs.length - 1))
    : 0;
  return { mean, sd };
}

function cacheDir(explicit?: string): string {
  if (explicit) return explicit;
  const base = Deno.env.get("XDG_CACHE_HOME") ?? join(Deno.env.get("HOME") ?? "/tmp", ".cache");
  return join(base, "powerinfer-deno", "bench");
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Bytes of every tensor of the file, grouped the way a token reads them. */
function tensorBytes(path: string) {
  using file = openGguf(path);
  let always = 0; // attention, norms, predictor: read in full by every token
  let ffn = 0; // up + gate + down(_t): read in full densely, only active rows sparsely
  let output = 0;
  let embdRow = 0;
  let nLayer = 0, nEmbdGqa = 0;
  for (const t of file.tensors) {
    if (t.name === "token_embd.weight") {
      embdRow = t.byteLength / t.ne[1]!;
    } else if (t.name === "output.weight") {
      output = t.byteLength;
    } else if (/ffn_(up|gate|down|down_t)\.weight$/.test(t.name)) {
      ffn += t.byteLength;
    } else {
      always += t.byteLength;
    }
    const m = /^blk\.(\d+)\.attn_k\.weight$/.exec(t.name);
    if (m) {
      nLayer = Math.max(nLayer, Number(m[1]) + 1);
      nEmbdGqa = t.ne[1]!;
    }
  }
  if (!file.tensor("output.weight")) output = file.tensor("token_embd.weight")!.byteLength;
  return { always, ffn, output, embdRow, nLayer, nEmbdGqa, magic: file.magic };
}

/**
 * Mean fraction of FFN neurons computed per token (sparse: measured through the profiler hook),
 * and each token's active neurons per layer (`lists[token][layer]`, ascending).
 */
function measureActiveFraction(path: string, ids: number[]) {
  let fired = 0, total = 0;
  const lists: Int32Array[][] = ids.map(() => []);
  const seen = new Map<number, number>(); // layer -> tokens seen
  using model = loadModel(path, {
    nCtx: ids.length + 8,
    onFfnActivation: (layer, active) => {
      const rows: number[] = [];
      for (let j = 0; j < active.length; j++) if (active[j]) rows.push(j);
      fired += rows.length;
      total += active.length;
      const t = seen.get(layer) ?? 0;
      seen.set(layer, t + 1);
      if (t < lists.length) lists[t]![layer] = Int32Array.from(rows);
    },
  });
  model.eval(ids);
  return { active: total ? fired / total : 1, lists };
}

/** Bytes/s of `pass` (which reads `bytes`): one warm-up pass, then the best of 3. */
function bestRate(bytes: number, pass: () => void): number {
  pass();
  let best = 0;
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    pass();
    best = Math.max(best, bytes / ((performance.now() - t0) / 1000));
  }
  return best;
}

/**
 * Bytes/s of the sparse FFN's gathered read without its arithmetic, per thread count: every
 * token's active rows of each layer's up, gate and down_t, in the file's own mapping (huge pages
 * where the model gets them); NaN for a file without such rows.
 */
function measureGatherBandwidth(
  path: string,
  lists: Int32Array[][],
  threadCounts: number[],
): Map<number, number> {
  const none = new Map(threadCounts.map((t) => [t, NaN]));
  using file = openGguf(path);
  // every FFN matrix is a view into the one mapping of the file: its rows as byte offsets there
  const mats = new Map<number, { start: number; rowBytes: number }[]>();
  let mapping: Uint8Array | undefined;
  for (const t of file.tensors) {
    const m = /^blk\.(\d+)\.ffn_(up|gate|down_t)\.weight$/.exec(t.name);
    if (!m) continue;
    const layer = Number(m[1]);
    const rowBytes = t.byteLength / t.ne[1]!;
    if (!Number.isInteger(rowBytes)) return none;
    const data = file.tensorData(t);
    mapping ??= new Uint8Array(data.buffer);
    mats.set(layer, [...(mats.get(layer) ?? []), { start: data.byteOffset, rowBytes }]);
  }
  // one offset list per row size (the same for every matrix of a uniformly typed model), in the
  // order the tokens read them
  const offsets = new Map<number, bigint[]>();
  for (const perLayer of lists) {
    perLayer.forEach((rows, layer) => {
      for (const { start, rowBytes } of mats.get(layer) ?? []) {
        const list = offsets.get(rowBytes) ?? [];
        for (const r of rows) list.push(BigInt(start + r * rowBytes));
        offsets.set(rowBytes, list);
      }
    });
  }
  if (!mapping || offsets.size === 0) return none; // no FFN rows to gather (not a sparse file)
  const buf = mapping;
  const calls = [...offsets].map(([rowBytes, list]) => ({
    rowBytes,
    offsets: BigInt64Array.from(list),
  }));
  const bytes = calls.reduce((sum, c) => sum + c.rowBytes * c.offsets.length, 0);
  return new Map(threadCounts.map((t) => {
    setThreads(t);
    return [
      t,
      bestRate(bytes, () => {
        for (const c of calls) bandwidthGather(buf, c.rowBytes, c.offsets, 1);
      }),
    ];
  }));
}

/** Bytes/s of a streaming read of a 256 MiB buffer, per thread count. */
function measureBandwidth(threadCounts: number[]): Map<number, number> {
  const buf = new Uint8Array(256 * 2 ** 20);
  buf.fill(1);
  return new Map(threadCounts.map((t) => {
    setThreads(t);
    return [t, bestRate(2 * buf.byteLength, () => bandwidthRead(buf, 2))];
  }));
}

interface RunSpec {
  label: string;
  path: string;
  mode: "sparse" | "dense";
  /** Dense run of a PWRI file: predictor off (threshold −∞). */
  thresholdOff: boolean;
}

function benchOne(spec: RunSpec, threads: number, pp: number, tg: number, reps: number) {
  setThreads(threads);
  const prompt = Array.from({ length: pp }, (_, i) => 100 + ((i * 7919) % 31000));
  const gen = Array.from({ length: tg }, (_, i) => 200 + ((i * 104729) % 31000));
  using model = loadModel(spec.path, {
    threads,
    nCtx: pp + tg + 16,
    nBatch: Math.max(pp, 1),
    sparseThreshold: spec.thresholdOff ? -3.4e38 : undefined,
  });
  // warm-up: touch the weights once
  model.eval(prompt.slice(0, Math.min(pp, 8)));
  model.reset();
  const ppRates: number[] = [], tgRates: number[] = [];
  for (let r = 0; r < reps; r++) {
    model.reset();
    let t0 = performance.now();
    model.eval(prompt);
    ppRates.push(pp / ((performance.now() - t0) / 1000));
    t0 = performance.now();
    for (const id of gen) model.eval([id]);
    tgRates.push(tg / ((performance.now() - t0) / 1000));
  }
  hugeMappedMiB = Math.max(hugeMappedMiB, filePmdMappedMiB());
  return { pp: stat(ppRates), tg: stat(tgRates) };
}

/** Most file-backed memory seen mapped with 2 MiB pages while a model was loaded. */
let hugeMappedMiB = 0;

/** MiB of the `key:  N kB` lines of a /proc file (0 where the file or the key is missing). */
function procMiB(path: string, keys: string[]): number[] {
  let s = "";
  try {
    s = Deno.readTextFileSync(path);
  } catch {
    // not Linux: report 0
  }
  return keys.map((k) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? 0) / 1024);
}

function filePmdMappedMiB(): number {
  return procMiB("/proc/self/smaps_rollup", ["FilePmdMapped"])[0]!;
}

function peakRss(): { hwmMiB: number; anonMiB: number } {
  const [hwmMiB, anonMiB] = procMiB("/proc/self/status", ["VmHWM", "RssAnon"]);
  return { hwmMiB: hwmMiB!, anonMiB: anonMiB! };
}

const fmtStat = (s: Stat) => `${s.mean.toFixed(2)} ± ${s.sd.toFixed(2)}`;

/** The task's entry: exit status 0, or 1 after a one-line `error: ...` on stderr. */
export async function main(args: string[]): Promise<number> {
  try {
    return await bench(args);
  } catch (error) {
    return reportError(error);
  }
}

async function bench(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      shape: { type: "string" },
      type: { type: "string", default: "q4_0" },
      sparsity: { type: "string", default: "0.87" },
      seed: { type: "string", default: "1" },
      model: { type: "string" },
      "dense-model": { type: "string" },
      threads: { type: "string" },
      reps: { type: "string", default: "3" },
      pp: { type: "string", default: "49" },
      tg: { type: "string", default: "64" },
      cache: { type: "string" },
      "no-dense": { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const log = (m: string) => console.error(m);
  const type = values.type === "f16" ? "f16" : "q4_0";
  let sparsePath = values.model;
  let densePath = values["dense-model"];
  let label = sparsePath?.split("/").pop() ?? "";
  if (!sparsePath) {
    if (!values.shape) {
      throw new Error("Give --shape NAME or --model FILE (--help lists the options)");
    }
    const shape = modelShape(values.shape);
    const dir = cacheDir(values.cache);
    await Deno.mkdir(dir, { recursive: true });
    const stem = `${shape.name}.${type}.s${values.sparsity}.seed${values.seed}`;
    sparsePath = join(dir, `${stem}.powerinfer.gguf`);
    densePath = join(dir, `${stem}.dense.gguf`);
    label = `${shape.name} ${type.toUpperCase()}`;
    for (const [path, dense] of [[sparsePath, false], [densePath, true]] as const) {
      if (dense && values["no-dense"]) continue;
      if (await exists(path)) continue;
      log(`bench: generating ${path}`);
      // in a child process, so this process's peak RSS is the benchmark's own
      const cli = new URL("../src/cli/make_model.ts", import.meta.url).pathname;
      const { success } = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          cli,
          "--shape",
          shape.name,
          "--type",
          type,
          "--sparsity",
          String(values.sparsity),
          "--seed",
          String(values.seed),
          "--stats",
          dense ? "none" : join(dir, `${stem}.activation`),
          "--out",
          path,
          ...(dense ? ["--dense"] : []),
        ],
        stdout: "null",
        stderr: "inherit",
      }).output();
      if (!success) throw new Error(`make-model failed for ${path}`);
    }
  }
  if (values["no-dense"]) densePath = undefined;
  const maxThreads = values.threads ? Number(values.threads) : physicalCores();
  const threadCounts = [...new Set([1, maxThreads])];
  const reps = Number(values.reps), pp = Number(values.pp), tg = Number(values.tg);

  const runs: RunSpec[] = [{ label, path: sparsePath, mode: "sparse", thresholdOff: false }];
  if (!values["no-dense"]) {
    runs.push(
      densePath
        ? { label, path: densePath, mode: "dense", thresholdOff: false }
        : { label, path: sparsePath, mode: "dense", thresholdOff: true },
    );
  }

  // Bytes a generated token reads: weights it touches + one embedding row + its KV cache reads.
  const calib = Array.from({ length: 32 }, (_, i) => 300 + ((i * 7919) % 31000));
  const sparseBytes = tensorBytes(sparsePath);
  const { active, lists: activeLists } = measureActiveFraction(sparsePath, calib);
  const kvBytes = (b: typeof sparseBytes) => 2 * 2 * b.nLayer * b.nEmbdGqa * (pp + tg / 2);
  const bytesPerToken = {
    sparse: sparseBytes.always + sparseBytes.output + sparseBytes.embdRow +
      active * sparseBytes.ffn +
      kvBytes(sparseBytes),
    dense: 0,
  };
  if (densePath) {
    const d = tensorBytes(densePath);
    bytesPerToken.dense = d.always + d.output + d.embdRow + d.ffn + kvBytes(d);
  } else {
    bytesPerToken.dense = sparseBytes.always + sparseBytes.output + sparseBytes.embdRow +
      sparseBytes.ffn + kvBytes(sparseBytes);
  }

  // Repetitions interleave the configurations, so a load change on a shared machine hits them
  // alike and the ratios of one run stay meaningful.
  const configs = threadCounts.flatMap((threads) => runs.map((run) => ({ threads, run })));
  const samples = configs.map(() => ({ pp: [] as number[], tg: [] as number[] }));
  for (let r = 0; r < reps; r++) {
    configs.forEach(({ threads, run }, i) => {
      log(`bench: rep ${r + 1}/${reps}: ${run.mode}, ${threads} thread(s) ...`);
      const one = benchOne(run, threads, pp, tg, 1);
      samples[i]!.pp.push(one.pp.mean);
      samples[i]!.tg.push(one.tg.mean);
    });
  }
  const rows: BenchRow[] = [];
  configs.forEach(({ threads, run }, i) => {
    const tgStat = stat(samples[i]!.tg);
    rows.push({
      model: run.label,
      mode: run.mode,
      threads,
      test: `pp${pp}`,
      tokensPerSecond: stat(samples[i]!.pp),
    });
    const bytes = bytesPerToken[run.mode];
    rows.push({
      model: run.label,
      mode: run.mode,
      threads,
      test: `tg${tg}`,
      tokensPerSecond: tgStat,
      bytesPerToken: bytes,
      roofline: 0,
    });
  });
  // after the runs (its 256 MiB buffer must not count in the benchmark's peak RSS)
  const rss = peakRss();
  const bandwidth = measureBandwidth(threadCounts);
  const gatherBandwidth = measureGatherBandwidth(sparsePath, activeLists, threadCounts);
  // the sparse token's FFN bytes are rows gathered at `active` density: the time they need at
  // the gathered read's speed, the rest at the streaming read's
  const gatheredBytes = active * sparseBytes.ffn;
  for (const row of rows) {
    if (row.bytesPerToken !== undefined) {
      const bw = bandwidth.get(row.threads)!;
      row.roofline = (row.bytesPerToken * row.tokensPerSecond.mean) / bw;
      const gbw = gatherBandwidth.get(row.threads)!;
      if (row.mode === "sparse" && Number.isFinite(gbw)) {
        row.rooflineGathered = row.tokensPerSecond.mean *
          ((row.bytesPerToken - gatheredBytes) / bw + gatheredBytes / gbw);
      }
    }
  }
  setThreads(0);
  // The sparse/dense generation ratio that the reads alone allow: both paths at 100% of their
  // read speeds (dense streams everything; sparse gathers its FFN rows)
  const attainable = new Map(
    threadCounts.flatMap((t) => {
      const bw = bandwidth.get(t)!, gbw = gatherBandwidth.get(t)!;
      if (values["no-dense"] || !Number.isFinite(gbw)) return [];
      const sparseSeconds = (bytesPerToken.sparse - gatheredBytes) / bw + gatheredBytes / gbw;
      return [[t, bytesPerToken.dense / bw / sparseSeconds] as const];
    }),
  );

  const pick = (mode: string, test: string, threads: number) =>
    rows.find((r) => r.mode === mode && r.test.startsWith(test) && r.threads === threads)
      ?.tokensPerSecond.mean ?? null;
  const top = Math.max(...threadCounts);
  if (values.json) {
    console.log(JSON.stringify(
      {
        model: label,
        threads: top,
        sparse_tg: pick("sparse", "tg", top),
        dense_tg: pick("dense", "tg", top),
        sparse_pp: pick("sparse", "pp", top),
        dense_pp: pick("dense", "pp", top),
        active_fraction: active,
        bandwidth_gbs: Object.fromEntries([...bandwidth].map(([t, b]) => [t, b / 1e9])),
        gather_bandwidth_gbs: Object.fromEntries(
          [...gatherBandwidth].map(([t, b]) => [t, b / 1e9]),
        ),
        attainable_sparse_dense: Object.fromEntries(attainable),
        peak_rss_mib: rss.hwmMiB,
        rss_anon_mib: rss.anonMiB,
        huge_mapped_mib: hugeMappedMiB,
        rows,
      },
      null,
      2,
    ));
    return 0;
  }
  const weightBytes = (await Deno.stat(sparsePath)).size;
  console.log(`\n| model | size | mode | threads | test | t/s | roofline |`);
  console.log(`|---|---|---|---|---|---|---|`);
  for (const r of rows) {
    const roof = r.roofline === undefined
      ? ""
      : `${(r.roofline * 100).toFixed(0)}% of ${
        (bandwidth.get(r.threads)! / 1e9).toFixed(1)
      } GB/s (${(r.bytesPerToken! / 2 ** 20).toFixed(0)} MiB/token)`;
    console.log(
      `| ${r.model} | ${
        (weightBytes / 2 ** 30).toFixed(2)
      } GiB | ${r.mode} | ${r.threads} | ${r.test} | ${fmtStat(r.tokensPerSecond)} | ${roof} |`,
    );
  }
  const ratio = (a: number | null, b: number | null) => a && b ? (a / b).toFixed(2) : "n/a";
  console.log(
    `\nFFN neurons computed per token (sparse): ${(active * 100).toFixed(1)}%. ` +
      `sparse/dense tg at ${top} thread(s): ${
        ratio(pick("sparse", "tg", top), pick("dense", "tg", top))
      }×; ` +
      `sparse tg ${top} vs 1 thread: ${
        ratio(pick("sparse", "tg", top), pick("sparse", "tg", 1))
      }×. ` +
      (rows.some((r) => r.rooflineGathered !== undefined)
        ? `Gathered FFN rows (each token's active rows, read without arithmetic): ${
          threadCounts.map((t) =>
            `${(gatherBandwidth.get(t)! / 1e9).toFixed(1)} GB/s at ${t} thread(s)`
          ).join(", ")
        }; with the FFN bytes at that speed, sparse tg reaches ${
          rows.filter((r) => r.rooflineGathered !== undefined).map((r) =>
            `${(r.rooflineGathered! * 100).toFixed(0)}% (${r.threads} thread(s))`
          ).join(", ")
        } of the roofline. `
        : "") +
      (attainable.size
        ? `At these read speeds the reads alone allow sparse/dense tg up to ${
          [...attainable].map(([t, r]) => `${r.toFixed(2)}× (${t} thread(s))`).join(", ")
        }. `
        : "") +
      `Peak RSS ${rss.hwmMiB.toFixed(0)} MiB (anonymous ${
        rss.anonMiB.toFixed(0)
      } MiB; weights are mapped, ${hugeMappedMiB.toFixed(0)} MiB of them with 2 MiB pages).`,
  );
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
