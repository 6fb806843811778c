// Library lookup errors and memory-mapped files (ffi/library.ts, ffi/mapped_file.ts).
import { deepStrictEqual, match, ok, strictEqual, throws } from "node:assert/strict";
import { MappedFileError, NativeLibraryError } from "../src/errors.ts";
import {
  KERNELS_ENV,
  nativeLibraryPath,
  openNative,
  openNativeFrom,
  repoLibraryPath,
} from "../ffi/library.ts";
import { MappedFile } from "../ffi/mapped_file.ts";
import { PI_ABI_VERSION } from "../ffi/symbols.ts";

Deno.test("openNativeFrom() names a wrong override path and the fix", () => {
  const path = "/nonexistent/dir/libpowerinfer_kernels.so";
  throws(
    () => openNativeFrom({ override: path }),
    (e: unknown) =>
      e instanceof NativeLibraryError && e.message.includes(path) &&
      e.message.includes("deno task build") && e.message.includes(KERNELS_ENV),
  );
});

Deno.test("openNativeFrom() names a file that is not a library", () => {
  const path = Deno.makeTempFileSync({ suffix: ".so" });
  try {
    Deno.writeTextFileSync(path, "not an ELF file");
    throws(
      () => openNativeFrom({ override: path }),
      (e: unknown) => e instanceof NativeLibraryError && e.message.includes(path),
    );
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("openNativeFrom() with no place to look says what to run", () => {
  throws(
    () => openNativeFrom({ repo: false, cache: false }),
    (e: unknown) => e instanceof NativeLibraryError && /deno task build/.test(e.message),
  );
});

Deno.test("openNativeFrom() loads the repo build and checks its ABI", () => {
  const path = repoLibraryPath()!;
  const { library, path: loaded } = openNativeFrom({ override: path });
  try {
    strictEqual(loaded, path);
    strictEqual(library.symbols.pi_abi_version(), PI_ABI_VERSION);
  } finally {
    library.close();
  }
});

Deno.test("POWERINFER_KERNELS pointing nowhere fails with a NativeLibraryError", async () => {
  const bad = "/nonexistent/override/libpowerinfer_kernels.so";
  const code = `import { openNative } from ${
    JSON.stringify(import.meta.resolve("../ffi/library.ts"))
  };
try { openNative(); console.log("loaded"); } catch (e) { console.log(e.name + ": " + e.message); }`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { [KERNELS_ENV]: bad },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  match(text, /^NativeLibraryError: /);
  ok(text.includes(bad), text);
  ok(text.includes("deno task build"), text);
});

Deno.test("openNative() opens once and records the path", () => {
  const a = openNative();
  strictEqual(openNative(), a);
  ok(nativeLibraryPath());
});

function tempFileWith(bytes: Uint8Array): string {
  const path = Deno.makeTempFileSync({ prefix: "pi_mmap_" });
  Deno.writeFileSync(path, bytes);
  return path;
}

Deno.test("MappedFile.view() reads the file without copying", () => {
  const bytes = Uint8Array.from({ length: 10000 }, (_, i) => (i * 7) & 255);
  const path = tempFileWith(bytes);
  try {
    using file = MappedFile.open(path);
    strictEqual(file.byteLength, bytes.length);
    strictEqual(file.path, path);
    deepStrictEqual(file.view(), bytes);
    const part = file.view(100, 50);
    deepStrictEqual(part, bytes.subarray(100, 150));
    strictEqual(part.buffer, file.view().buffer); // one mapping behind every view
    // a write to the file shows through the shared mapping: no copy was made
    using fh = Deno.openSync(path, { write: true });
    fh.seekSync(120, Deno.SeekMode.Start);
    fh.writeSync(new Uint8Array([1, 2, 3]));
    deepStrictEqual(Array.from(part.subarray(20, 23)), [1, 2, 3]);
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("MappedFile.close() invalidates the mapping and its views", () => {
  const path = tempFileWith(new Uint8Array(4096).fill(9));
  try {
    const file = MappedFile.open(path);
    const v = file.view(0, 16);
    strictEqual(v[0], 9);
    file.close();
    ok(file.closed);
    throws(() => file.view(), MappedFileError);
    strictEqual(v.length, 0); // detached: reads nothing rather than unmapped memory
    strictEqual(v[0], undefined);
    file.close(); // idempotent
    file[Symbol.dispose]();
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("MappedFile.view() rejects ranges outside the file", () => {
  const path = tempFileWith(new Uint8Array(10));
  try {
    using file = MappedFile.open(path);
    throws(() => file.view(8, 3), RangeError);
    throws(() => file.view(-1), RangeError);
    throws(() => file.view(11), RangeError);
    strictEqual(file.view(10).length, 0);
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("MappedFile.open() maps an empty file", () => {
  const path = tempFileWith(new Uint8Array(0));
  try {
    using file = MappedFile.open(path);
    strictEqual(file.byteLength, 0);
    strictEqual(file.view().length, 0);
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("MappedFile.open() of a missing file throws MappedFileError with the OS reason", () => {
  const path = "/nonexistent/model.gguf";
  throws(
    () => MappedFile.open(path),
    (e: unknown) =>
      e instanceof MappedFileError && e.message.includes(path) &&
      /no such file/i.test(e.message),
  );
});

Deno.test("MappedFile.open() of a directory throws MappedFileError", () => {
  const dir = Deno.makeTempDirSync();
  try {
    throws(() => MappedFile.open(dir), MappedFileError);
  } finally {
    Deno.removeSync(dir);
  }
});

Deno.test("pi_aligned_alloc returns aligned memory and rejects a bad alignment", () => {
  const native = openNative();
  const p = native.pi_aligned_alloc(1000n, 64n);
  ok(p !== null);
  strictEqual(Deno.UnsafePointer.value(p) % 64n, 0n);
  native.pi_aligned_free(p);
  strictEqual(native.pi_aligned_alloc(16n, 48n), null);
  match(Deno.UnsafePointerView.getCString(native.pi_last_error()!), /Alignment 48/);
});
