/**
 * The optional CUDA kernel library (`deno task build --cuda` → build/kernels-cuda/) and the
 * device memory it owns. Lookup: env `POWERINFER_CUDA_KERNELS`, the repo's
 * `build/kernels-cuda/`, then the per-user cache directory. Everything here degrades to
 * "no CUDA" (`hasCuda()` false) when the library is missing or no device is present.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { KernelError, NativeLibraryError } from "../src/errors.ts";
import { cacheDirectory } from "./library.ts";
import { CUDA_SYMBOLS, type CudaSymbols, PI_ABI_VERSION, PI_ERR_CUDA } from "./symbols.ts";

/** The environment variable that overrides the CUDA library path. */
export const CUDA_KERNELS_ENV = "POWERINFER_CUDA_KERNELS";

const LIB_NAME = Deno.build.os === "windows"
  ? "powerinfer_cuda.dll"
  : Deno.build.os === "darwin"
  ? "libpowerinfer_cuda.dylib"
  : "libpowerinfer_cuda.so";

let cuda: CudaSymbols | null | undefined;
let loadError: string | undefined;

function candidates(): string[] {
  let override: string | undefined;
  try {
    override = Deno.env.get(CUDA_KERNELS_ENV) || undefined;
  } catch {
    override = undefined;
  }
  if (override) return [override];
  const out: string[] = [];
  const repo = new URL(`../build/kernels-cuda/${LIB_NAME}`, import.meta.url);
  if (repo.protocol === "file:") out.push(fileURLToPath(repo));
  const cache = cacheDirectory();
  if (cache) out.push(`${cache}/${LIB_NAME}`);
  return out;
}

/** The CUDA library's symbols, or `null` when it is not built / not loadable (see `cudaLoadError`). */
export function openCuda(): CudaSymbols | null {
  if (cuda !== undefined) return cuda;
  const failures: string[] = [];
  for (const path of candidates()) {
    try {
      Deno.statSync(path);
    } catch {
      failures.push(`${path}: no such file`);
      continue;
    }
    try {
      const lib = Deno.dlopen(path, CUDA_SYMBOLS);
      const abi = lib.symbols.pi_cuda_abi_version();
      if (abi !== PI_ABI_VERSION) {
        lib.close();
        failures.push(`${path}: ABI ${abi} does not match ${PI_ABI_VERSION}`);
        continue;
      }
      cuda = lib.symbols;
      return cuda;
    } catch (e) {
      failures.push(`${path}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  loadError = `Cannot load the CUDA kernels (${failures.join("; ")}): run "deno task build --cuda"`;
  cuda = null;
  return cuda;
}

/** Why {@linkcode openCuda} returned null, if it did. */
export function cudaLoadError(): string | undefined {
  return loadError;
}

function requireCuda(): CudaSymbols {
  const c = openCuda();
  if (!c) throw new NativeLibraryError(loadError ?? "CUDA kernels are not available");
  return c;
}

function check(name: string, status: number): void {
  if (status === 0) return;
  const p = requireCuda().pi_cuda_last_error();
  const detail = p === null ? "" : Deno.UnsafePointerView.getCString(p);
  const code = status === PI_ERR_CUDA ? "PI_ERR_CUDA" : `status ${status}`;
  throw new KernelError(`${name} failed with ${code}${detail ? `: ${detail}` : ""}`, status);
}

/** Number of CUDA devices (0 when the library is missing or no device/driver is present). */
export function cudaDeviceCount(): number {
  const c = openCuda();
  if (!c) return 0;
  const n = new Int32Array(1);
  if (c.pi_cuda_device_count(n) !== 0) return 0;
  return n[0]!;
}

/** Whether CUDA kernels can run here (library built and at least one device). */
export function hasCuda(): boolean {
  return cudaDeviceCount() > 0;
}

const freeLater = new FinalizationRegistry<Deno.PointerValue>((p) => {
  try {
    openCuda()?.pi_cuda_free(p);
  } catch {
    // nothing to report to at finalization time
  }
});

/** Device memory owned by this object; `close()` frees it (idempotent). */
export class CudaBuffer implements Disposable {
  /** Size in bytes. */
  readonly byteLength: number;
  #ptr: Deno.PointerValue;

  private constructor(ptr: Deno.PointerValue, byteLength: number) {
    this.#ptr = ptr;
    this.byteLength = byteLength;
    freeLater.register(this, ptr, this);
  }

  /** Allocates `byteLength` bytes of device memory. */
  static alloc(byteLength: number): CudaBuffer {
    if (!Number.isSafeInteger(byteLength) || byteLength < 0) {
      throw new RangeError(`Device buffer size must be a non-negative integer, got ${byteLength}`);
    }
    const out = new BigUint64Array(1);
    check("pi_cuda_malloc", requireCuda().pi_cuda_malloc(out, BigInt(byteLength)));
    return new CudaBuffer(Deno.UnsafePointer.create(out[0]!), byteLength);
  }

  /** Allocates a buffer holding a copy of `src`. */
  static from(src: ArrayBufferView): CudaBuffer {
    const buf = CudaBuffer.alloc(src.byteLength);
    buf.upload(src);
    return buf;
  }

  /** The device pointer (for ffi/ wrappers only). */
  get pointer(): Deno.PointerValue {
    if (this.#ptr === null) throw new KernelError("Device buffer is closed", -1);
    return this.#ptr;
  }

  /** Copies `src` to the start of the buffer. */
  upload(src: ArrayBufferView): void {
    if (src.byteLength > this.byteLength) {
      throw new RangeError(`Upload of ${src.byteLength} bytes into ${this.byteLength}`);
    }
    const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    check(
      "pi_cuda_memcpy_h2d",
      requireCuda().pi_cuda_memcpy_h2d(this.pointer, bytes, BigInt(bytes.byteLength)),
    );
  }

  /** Copies the start of the buffer into `dst` (synchronous). */
  download(dst: ArrayBufferView): void {
    if (dst.byteLength > this.byteLength) {
      throw new RangeError(`Download of ${dst.byteLength} bytes from ${this.byteLength}`);
    }
    const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
    check(
      "pi_cuda_memcpy_d2h",
      requireCuda().pi_cuda_memcpy_d2h(bytes, this.pointer, BigInt(bytes.byteLength)),
    );
  }

  /** Frees the device memory. Idempotent. */
  close(): void {
    if (this.#ptr === null) return;
    const p = this.#ptr;
    this.#ptr = null;
    freeLater.unregister(this);
    check("pi_cuda_free", requireCuda().pi_cuda_free(p));
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Waits for every queued kernel. */
export function cudaSynchronize(): void {
  check("pi_cuda_synchronize", requireCuda().pi_cuda_synchronize());
}

/** RMSNorm on the device (model.md §2); rows = `nRows`, `w` may be null. */
export function cudaRmsNorm(
  out: CudaBuffer,
  x: CudaBuffer,
  w: CudaBuffer | null,
  nRows: number,
  nCols: number,
  eps: number,
): void {
  const bytes = nRows * nCols * 4;
  if (out.byteLength < bytes || x.byteLength < bytes || (w && w.byteLength < nCols * 4)) {
    throw new RangeError(`cudaRmsNorm: buffers too small for ${nRows}x${nCols}`);
  }
  check(
    "pi_cuda_rmsnorm_f32",
    requireCuda().pi_cuda_rmsnorm_f32(
      out.pointer,
      x.pointer,
      w ? w.pointer : null,
      BigInt(nRows),
      BigInt(nCols),
      eps,
      null,
    ),
  );
}

/** `out[t*nRows + r] = dot(W[r], fp16(x[t]))` on the device, for fp16 weights. */
export function cudaMatmulF16(
  out: CudaBuffer,
  w: CudaBuffer,
  nRows: number,
  nCols: number,
  x: CudaBuffer,
  nTokens: number,
): void {
  if (
    out.byteLength < nTokens * nRows * 4 || w.byteLength < nRows * nCols * 2 ||
    x.byteLength < nTokens * nCols * 4
  ) {
    throw new RangeError(`cudaMatmulF16: buffers too small for ${nRows}x${nCols}, ${nTokens}`);
  }
  check(
    "pi_cuda_matmul_f16",
    requireCuda().pi_cuda_matmul_f16(
      out.pointer,
      w.pointer,
      BigInt(nRows),
      BigInt(nCols),
      x.pointer,
      BigInt(nTokens),
      null,
    ),
  );
}
