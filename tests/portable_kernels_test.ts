// The portable kernels (no AVX2: other CPUs, -DPI_NO_SIMD builds, PI_FORCE_SCALAR=1) compute
// the AVX2 kernels' arithmetic in plain C, so a model gives the same bits, and matches
// PowerInfer's x86 references, on every CPU. Each case of tests/_kernel_cases.ts runs here and
// in a child process that has PI_FORCE_SCALAR=1; their output digests must be equal.
import { deepStrictEqual, ok } from "node:assert/strict";
import { hasAvx2 } from "../ffi/ops.ts";
import { kernelDigests } from "./_kernel_cases.ts";

Deno.test({
  name: "portable kernels (PI_FORCE_SCALAR=1) give the AVX2 kernels' bits on every fast path",
  // without AVX2 this process already runs the portable kernels: nothing to compare with
  ignore: !hasAvx2(),
  fn: async () => {
    const here = kernelDigests();
    const child = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("./_kernel_cases.ts", import.meta.url).pathname],
      env: { PI_FORCE_SCALAR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(child.stderr);
    ok(child.success, `child failed: ${err}`);
    const { avx2, digests: portable } = JSON.parse(new TextDecoder().decode(child.stdout)) as {
      avx2: boolean;
      digests: Record<string, string>;
    };
    ok(!avx2, "PI_FORCE_SCALAR=1 did not turn the AVX2 kernels off");
    ok(Object.keys(here).length >= 60, `only ${Object.keys(here).length} cases`);
    const differ = Object.keys(here).filter((k) => portable[k] !== here[k]);
    deepStrictEqual(differ, [], `portable results differ: ${differ.join("; ")}`);
    deepStrictEqual(Object.keys(portable).sort(), Object.keys(here).sort());
  },
});
