/**
 * Finds and opens the native kernel library (the only `Deno.dlopen` in the project).
 *
 * Lookup order: the `POWERINFER_KERNELS` environment variable (a path to the library; when set
 * it is the only candidate), the repo's own `build/kernels/` (when this module is loaded from a
 * `file:` URL), then the per-user cache `$XDG_CACHE_HOME/powerinfer-deno/<abi>/` (or
 * `~/.cache/powerinfer-deno/<abi>/`). A `deno compile`d binary that embeds the library
 * (`--include build/kernels/`) extracts it into that cache directory first, because the
 * dynamic loader cannot read the binary's embedded file system.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { NativeLibraryError } from "../src/errors.ts";
import { type NativeSymbols, PI_ABI_VERSION, SYMBOLS } from "./symbols.ts";

/** The environment variable that overrides the library path. */
export const KERNELS_ENV = "POWERINFER_KERNELS";

const BUILD_HINT = `run "deno task build" in the powerinfer-deno checkout, or set ${KERNELS_ENV}=` +
  `/path/to/${libraryFileName()}`;

/** File name of the kernel library on this OS. */
export function libraryFileName(): string {
  switch (Deno.build.os) {
    case "windows":
      return "powerinfer_kernels.dll";
    case "darwin":
      return "libpowerinfer_kernels.dylib";
    default:
      return "libpowerinfer_kernels.so";
  }
}

/** Per-user cache directory for this ABI, or `undefined` when no home directory is known. */
export function cacheDirectory(): string | undefined {
  const env = (name: string) => {
    try {
      return Deno.env.get(name) || undefined;
    } catch {
      return undefined; // no --allow-env: skip the cache quietly
    }
  };
  const base = env("XDG_CACHE_HOME") ??
    (Deno.build.os === "windows" ? env("LOCALAPPDATA") : undefined) ??
    (env("HOME") ? `${env("HOME")}/.cache` : undefined);
  return base ? `${base}/powerinfer-deno/${PI_ABI_VERSION}` : undefined;
}

/** Path of the library in this checkout's `build/kernels/`, when loaded from a file: URL. */
export function repoLibraryPath(): string | undefined {
  const url = new URL(`../build/kernels/${libraryFileName()}`, import.meta.url);
  return url.protocol === "file:" ? fileURLToPath(url) : undefined;
}

/** Where {@linkcode openNativeFrom} looks. */
export interface LibraryLookup {
  /** An explicit path (the env override): when given, the only candidate. */
  override?: string;
  /** Also try the repo's `build/kernels/` (default true). */
  repo?: boolean;
  /** Also try the per-user cache directory (default true). */
  cache?: boolean;
}

/** An opened library and the path it came from. */
export interface OpenedLibrary {
  readonly library: Deno.DynamicLibrary<typeof SYMBOLS>;
  readonly path: string;
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function tryOpen(path: string, failures: string[]): OpenedLibrary | undefined {
  let library: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    library = Deno.dlopen(path, SYMBOLS);
  } catch (cause) {
    failures.push(`${path}: ${cause instanceof Error ? cause.message : String(cause)}`);
    return undefined;
  }
  const abi = library.symbols.pi_abi_version();
  if (abi !== PI_ABI_VERSION) {
    library.close();
    failures.push(`${path}: kernel ABI ${abi} does not match ${PI_ABI_VERSION}`);
    return undefined;
  }
  return { library, path };
}

/** Copies an embedded library (deno compile) into the cache directory; returns the copy. */
function extractEmbedded(source: string, cacheDir: string): string | undefined {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(source);
  } catch {
    return undefined;
  }
  const target = `${cacheDir}/${libraryFileName()}`;
  try {
    const old = Deno.readFileSync(target);
    if (old.length === bytes.length && old.every((b, i) => b === bytes[i])) return target;
  } catch {
    // not there yet
  }
  Deno.mkdirSync(cacheDir, { recursive: true });
  const tmp = `${target}.${Deno.pid}.tmp`;
  Deno.writeFileSync(tmp, bytes, { mode: 0o755 });
  Deno.renameSync(tmp, target);
  return target;
}

/**
 * Opens the kernel library from the given places, without caching the result.
 *
 * @throws {NativeLibraryError} Naming every path tried and the next step.
 */
export function openNativeFrom(lookup: LibraryLookup = {}): OpenedLibrary {
  const tried: string[] = [];
  const failures: string[] = [];
  const attempt = (path: string): OpenedLibrary | undefined => {
    tried.push(path);
    if (!exists(path)) {
      failures.push(`${path}: no such file`);
      return undefined;
    }
    return tryOpen(path, failures);
  };
  if (lookup.override !== undefined) {
    const opened = attempt(lookup.override);
    if (opened) return opened;
    throw new NativeLibraryError(
      `Cannot load the kernel library from ${KERNELS_ENV}=${lookup.override} (${
        failures.join("; ")
      }): unset ${KERNELS_ENV} or point it at a built library; ${BUILD_HINT}`,
    );
  }
  const cacheDir = lookup.cache === false ? undefined : cacheDirectory();
  if (lookup.repo !== false) {
    const repoPath = repoLibraryPath();
    if (repoPath) {
      if (Deno.build.standalone && cacheDir) {
        // deno compile: the embedded file is readable but not loadable; extract it first
        tried.push(repoPath);
        const copy = extractEmbedded(repoPath, cacheDir);
        if (copy) {
          const opened = attempt(copy);
          if (opened) return opened;
        } else {
          failures.push(`${repoPath}: not embedded (deno compile --include build/kernels/)`);
        }
      } else {
        const opened = attempt(repoPath);
        if (opened) return opened;
      }
    }
  }
  if (cacheDir) {
    const opened = attempt(`${cacheDir}/${libraryFileName()}`);
    if (opened) return opened;
  }
  throw new NativeLibraryError(
    `Cannot find a loadable kernel library (tried ${tried.join(", ") || "nothing"}; ${
      failures.join("; ")
    }): ${BUILD_HINT}`,
  );
}

let opened: OpenedLibrary | undefined;

/**
 * The kernel library's symbols, opened once per process (see the module doc for the lookup).
 *
 * @throws {NativeLibraryError} When no candidate loads or the ABI does not match.
 */
export function openNative(): NativeSymbols {
  if (opened) return opened.library.symbols;
  let override: string | undefined;
  try {
    override = Deno.env.get(KERNELS_ENV) || undefined;
  } catch {
    override = undefined; // without --allow-env the override cannot be set
  }
  opened = openNativeFrom({ override });
  return opened.library.symbols;
}

/** Path of the library {@linkcode openNative} loaded, or `undefined` before the first call. */
export function nativeLibraryPath(): string | undefined {
  return opened?.path;
}
