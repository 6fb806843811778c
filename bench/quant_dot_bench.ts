// Q4_0 matrix-vector speed at 1 thread (generation's shape): GB/s of weights for the 4-rows-per-
// pass kernel and the one-row kernel in the same run (pi_qd_set_q4_rows switches them; the bits
// are the same). Run: `deno bench -A bench/quant_dot_bench.ts` (also prints a GB/s summary).
import { GgmlType } from "../src/gguf/types.ts";
import { matmul, setThreads } from "../ffi/ops.ts";
import { nativeLibraryPath, openNative } from "../ffi/library.ts";
import { seededRandom } from "../tests/_helpers.ts";

openNative();
const path = nativeLibraryPath();
if (!path) throw new Error("quant_dot_bench: build the kernels first (deno task build)");
const knob = Deno.dlopen(path, { pi_qd_set_q4_rows: { parameters: ["i32"], result: "void" } });

const SHAPES: [number, number][] = [[2048, 2048], [5632, 2048], [2048, 5632]];
const rnd = seededRandom(9);

/** Random Q4_0 rows (valid fp16 scales around 0.01, random nibbles). */
function q4Matrix(nRows: number, nCols: number): Uint8Array {
  const nb = nCols / 32;
  const w = new Uint8Array(nRows * nb * 18);
  for (let i = 0; i < nRows * nb; i++) {
    const o = i * 18;
    w[o] = Math.floor(rnd() * 256);
    w[o + 1] = 0x20; // fp16 exponent around 2^-7
    for (let k = 2; k < 18; k++) w[o + k] = Math.floor(rnd() * 256);
  }
  return w;
}

// The single matrices stay in the L3 cache (compute speed); "cold" cycles 24 matrices of
// 2048x2048 (57 MB, above L3) like the layers of a model (DRAM speed).
const cases = [
  ...SHAPES.map(([r, c]) => ({ name: `${r}x${c}`, rows: r, cols: c, ws: [q4Matrix(r, c)] })),
  {
    name: "24x(2048x2048) cold",
    rows: 2048,
    cols: 2048,
    ws: Array.from({ length: 24 }, () => q4Matrix(2048, 2048)),
  },
].map((c) => ({
  ...c,
  next: 0,
  x: Float32Array.from({ length: c.cols }, () => rnd() - 0.5),
  out: new Float32Array(c.rows),
}));

setThreads(1);

function run(c: (typeof cases)[number]): void {
  const w = c.ws[c.next]!;
  c.next = (c.next + 1) % c.ws.length;
  matmul(c.out, w, GgmlType.Q4_0, c.rows, c.cols, c.x, 1);
}

function medianSeconds(f: () => void, reps: number): number {
  f();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    f();
    t.push(performance.now() - t0);
  }
  t.sort((a, b) => a - b);
  return t[reps >> 1]! / 1000;
}

// Interleaved before/after rounds so machine noise hits both alike.
const lines: string[] = [];
for (const c of cases) {
  const gbs: Record<number, number[]> = { 1: [], 4: [] };
  const same = [new Float32Array(c.rows), new Float32Array(c.rows)];
  for (let round = 0; round < 5; round++) {
    for (const rows of [1, 4]) {
      knob.symbols.pi_qd_set_q4_rows(rows);
      gbs[rows]!.push(c.ws[0]!.length / medianSeconds(() => run(c), 15) / 1e9);
      c.next = 0;
      run(c);
      same[rows === 1 ? 0 : 1]!.set(c.out);
    }
  }
  const med = (a: number[]) => a.sort((p, q) => p - q)[a.length >> 1]!;
  const identical = same[0]!.every((v, i) => Object.is(v, same[1]![i]));
  lines.push(
    `Q4_0 matvec ${c.name}, 1 thread: one row ${med(gbs[1]!).toFixed(1)} GB/s, ` +
      `4 rows ${med(gbs[4]!).toFixed(1)} GB/s (x${(med(gbs[4]!) / med(gbs[1]!)).toFixed(2)}), ` +
      `bit-identical ${identical}`,
  );
}
knob.symbols.pi_qd_set_q4_rows(4);
console.log(lines.join("\n"));

for (const c of cases) {
  for (const rows of [1, 4]) {
    Deno.bench(`q4_0 matvec ${c.name} rows/pass ${rows}`, { group: c.name }, () => {
      knob.symbols.pi_qd_set_q4_rows(rows);
      run(c);
    });
  }
}
