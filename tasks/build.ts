/**
 * `deno task build`: configures and builds the native kernels with CMake (Release).
 *
 *   deno task build               incremental build into build/kernels/
 *   deno task build --if-missing  do nothing when the library exists and is newer than every
 *                                 file under kernels/ (what `deno task test` / `run` use)
 *   deno task build --quiet       print only on failure
 *   deno task build --cuda        also build the CUDA library (-DPI_CUDA=ON) in build/kernels-cuda/
 *   deno task build --portable    also build the portable-only library (-DPI_NO_SIMD: how a
 *                                 non-x86 CPU compiles it) in build/kernels-portable/; run with
 *                                 POWERINFER_KERNELS=<that library> it must pass the tests too
 *   deno task build --install     copy the built library into the per-user cache directory, so
 *                                 the toolkit loads it from anywhere (ffi/library.ts)
 *
 * @module
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { cacheDirectory, libraryFileName } from "../ffi/library.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url)).replace(/\/$/, "");
const SOURCE = `${ROOT}/kernels`;

/** Newest modification time (ms) of the files under `dir`, skipping kernels/wip/. */
function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) {
      if (path === `${SOURCE}/wip`) continue;
      newest = Math.max(newest, newestMtime(path));
    } else if (entry.isFile) {
      newest = Math.max(newest, Deno.statSync(path).mtime?.getTime() ?? 0);
    }
  }
  return newest;
}

function mtimeOf(path: string): number | undefined {
  try {
    return Deno.statSync(path).mtime?.getTime() ?? 0;
  } catch {
    return undefined;
  }
}

async function run(cmd: string[], quiet: boolean): Promise<void> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd[0]!, {
      args: cmd.slice(1),
      stdout: quiet ? "piped" : "inherit",
      stderr: quiet ? "piped" : "inherit",
    }).spawn();
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) {
      throw new Error(`${cmd[0]} was not found on PATH: install CMake 3.13+ and a C compiler`, {
        cause,
      });
    }
    throw cause;
  }
  const out = await child.output();
  if (!out.success) {
    if (quiet) {
      const dec = new TextDecoder();
      console.error(dec.decode(out.stdout) + dec.decode(out.stderr));
    }
    throw new Error(`Command failed (exit ${out.code}): ${cmd.join(" ")}`);
  }
}

/** Configures (once) and builds one CMake tree; returns the library paths it made. */
async function buildTree(
  buildDir: string,
  cuda: boolean,
  quiet: boolean,
  portable = false,
): Promise<string[]> {
  if (mtimeOf(`${buildDir}/CMakeCache.txt`) === undefined) {
    await run([
      "cmake",
      "-S",
      SOURCE,
      "-B",
      buildDir,
      "-DCMAKE_BUILD_TYPE=Release",
      `-DPI_CUDA=${cuda ? "ON" : "OFF"}`,
      ...(portable ? ["-DCMAKE_C_FLAGS=-DPI_NO_SIMD"] : []),
    ], quiet);
  }
  const jobs = String(Math.max(1, navigator.hardwareConcurrency || 1));
  await run(["cmake", "--build", buildDir, "--config", "Release", "-j", jobs], quiet);
  const libs = [`${buildDir}/${libraryFileName()}`];
  if (cuda) libs.push(`${buildDir}/${libraryFileName().replace("_kernels", "_cuda")}`);
  return libs;
}

/** Minimum Deno version (README): FFI without unstable flags, Float16Array, `using`. */
const MIN_DENO = [2, 9];

function checkDenoVersion(): void {
  const [major = 0, minor = 0] = Deno.version.deno.split(".").map(Number);
  if (major < MIN_DENO[0]! || (major === MIN_DENO[0] && minor < MIN_DENO[1]!)) {
    throw new Error(`Deno ${Deno.version.deno} is too old: powerinfer-deno needs Deno 2.9+`);
  }
}

async function main(): Promise<void> {
  checkDenoVersion();
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "if-missing": { type: "boolean", default: false },
      quiet: { type: "boolean", short: "q", default: false },
      cuda: { type: "boolean", default: false },
      portable: { type: "boolean", default: false },
      install: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task build [--if-missing] [--quiet] [--cuda] [--portable] [--install]",
    );
    return;
  }
  const quiet = values.quiet;
  const lib = `${ROOT}/build/kernels/${libraryFileName()}`;
  if (values["if-missing"] && !values.cuda && !values.portable && !values.install) {
    const built = mtimeOf(lib);
    if (built !== undefined && built >= newestMtime(SOURCE)) return;
  }
  Deno.mkdirSync(`${ROOT}/build`, { recursive: true });
  // several shells may build at once (tests of different engineers): one at a time
  using lock = await Deno.open(`${ROOT}/build/.kernels.lock`, { create: true, write: true });
  await lock.lock(true);
  const made = await buildTree(`${ROOT}/build/kernels`, false, quiet);
  if (values.cuda) made.push(...await buildTree(`${ROOT}/build/kernels-cuda`, true, quiet));
  if (values.portable) {
    made.push(...await buildTree(`${ROOT}/build/kernels-portable`, false, quiet, true));
  }
  for (const path of made) {
    if (mtimeOf(path) === undefined) throw new Error(`The build did not produce ${path}`);
    // an unchanged library keeps its old mtime: touch it so --if-missing trusts it
    const now = new Date();
    Deno.utimeSync(path, now, now);
  }
  if (values.install) {
    const dir = cacheDirectory();
    if (!dir) throw new Error("No cache directory: set XDG_CACHE_HOME or HOME");
    Deno.mkdirSync(dir, { recursive: true });
    Deno.copyFileSync(lib, `${dir}/${libraryFileName()}`);
    made.push(`${dir}/${libraryFileName()} (installed copy)`);
  }
  if (!quiet) { for (const path of made) console.log(`kernels: ${path}`); }
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`build failed: ${e instanceof Error ? e.message : String(e)}`);
    Deno.exit(1);
  }
}
