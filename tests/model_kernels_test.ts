// The engine's kernels (rope.c, attention.c, activation.c) against TS transcriptions of
// shared/spec/model.md §3-§5 on seeded random inputs, including masks, GQA and fp16 caches.
import { ok, throws } from "node:assert/strict";
import { activation, attention, attentionRef, kvStore, rope } from "../ffi/ops.ts";
import { KernelError } from "../src/errors.ts";
import { assertClose, seededRandom } from "./_helpers.ts";
import { TsBackend } from "./_ts_backend.ts";

const f32 = Math.fround;
const f16 = Math.f16round;

function randomArray(n: number, seed: number, scale = 1): Float32Array {
  const r = seededRandom(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
}

/** model.md §3, in f32 steps: the TS spec backend's transcription (the same for every op). */
const ropeRef = (
  x: Float32Array,
  nTokens: number,
  nHeads: number,
  hd: number,
  pos: Int32Array,
  mode: 0 | 2,
  base: number,
  fs: number,
) => new TsBackend().rope(x, nTokens, nHeads, hd, hd, pos, mode, base, fs);

for (const mode of [0, 2] as const) {
  Deno.test(`rope() mode ${mode} matches the spec's iterative-angle formula`, () => {
    const [nTokens, nHeads, hd] = [5, 3, 32];
    const x = randomArray(nTokens * nHeads * hd, 7 + mode);
    const expected = Float32Array.from(x);
    const pos = Int32Array.from([0, 1, 2, 17, 400]);
    rope(x, nTokens, nHeads, hd, hd, pos, mode, 10000, 1);
    ropeRef(expected, nTokens, nHeads, hd, pos, mode, 10000, 1);
    assertClose(x, expected, 2e-6, `rope mode ${mode}`);
  });
}

Deno.test("rope() leaves position 0 unchanged and rejects an odd dim count", () => {
  const x = randomArray(16, 3);
  const y = Float32Array.from(x);
  rope(y, 1, 1, 16, 16, Int32Array.of(0), 0, 10000, 1);
  assertClose(y, x, 0, "rope at position 0");
  throws(() => rope(y, 1, 1, 16, 15, Int32Array.of(0), 0, 10000, 1), KernelError);
});

/** model.md §4 for a single sequence, with an fp16 or f32 cache. */
function attentionSpec(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  nTokens: number,
  nKv: number,
  nHead: number,
  nHeadKv: number,
  hd: number,
  qPos: Int32Array,
  cellPos: Int32Array,
  useF16: boolean,
): Float32Array {
  const round = useF16 ? f16 : (x: number) => x;
  const g = nHead / nHeadKv;
  const out = new Float32Array(nTokens * nHead * hd);
  const scale = f32(1 / f32(Math.sqrt(hd)));
  for (let t = 0; t < nTokens; t++) {
    for (let h = 0; h < nHead; h++) {
      const kvh = Math.floor(h / g);
      const score = new Float64Array(nKv).fill(-Infinity);
      let mx = -Infinity;
      for (let s = 0; s < nKv; s++) {
        if (cellPos[s]! < 0 || cellPos[s]! > qPos[t]!) continue;
        let dot = 0;
        for (let d = 0; d < hd; d++) {
          dot = f32(
            dot +
              f32(round(k[s * nHeadKv * hd + kvh * hd + d]!) * round(q[(t * nHead + h) * hd + d]!)),
          );
        }
        score[s] = f32(dot * scale);
        mx = Math.max(mx, score[s]!);
      }
      let sum = 0;
      const e = new Float64Array(nKv);
      for (let s = 0; s < nKv; s++) {
        if (score[s] === -Infinity) continue;
        e[s] = f16(Math.exp(f16(f32(score[s]! - mx))));
        sum += e[s]!;
      }
      const inv = f32(1 / sum);
      for (let d = 0; d < hd; d++) {
        let acc = 0;
        for (let s = 0; s < nKv; s++) {
          if (score[s] === -Infinity) continue; // masked: p = 0
          const p = round(f32(e[s]! * inv));
          acc = f32(acc + f32(round(v[s * nHeadKv * hd + kvh * hd + d]!) * p));
        }
        out[(t * nHead + h) * hd + d] = acc;
      }
    }
  }
  return out;
}

// The second shape leaves tails for the AVX2 kernel's 8-wide loads and 4-row passes; the last
// two reach its f32-lane sums (head dims and cell counts of 64 and more, plus f64 tails).
const ATTENTION_SHAPES = [
  [40, 6, 2, 32, 32],
  [50, 4, 2, 18, 37],
  [80, 4, 2, 64, 70],
  [160, 2, 1, 128, 133],
] as const;
for (const kv of ["f16", "f32"] as const) {
  for (const [nCtx, nHead, nHeadKv, hd, nKv] of ATTENTION_SHAPES) {
    Deno.test(`attention() with a ${kv} cache matches the spec (GQA ${nHead}/${nHeadKv}, head dim ${hd}, ${nKv} cells, causal mask, empty cells)`, () => {
      const nEmbdGqa = nHeadKv * hd;
      const kCache = kv === "f16"
        ? new Uint16Array(nCtx * nEmbdGqa)
        : new Float32Array(nCtx * nEmbdGqa);
      const vCache = kv === "f16"
        ? new Uint16Array(nCtx * nEmbdGqa)
        : new Float32Array(nCtx * nEmbdGqa);
      const cellPos = new Int32Array(nCtx).fill(-1);
      // 7 cached tokens (positions 0..6), then a batch of 3 new tokens at 7..9
      const nCells = 10;
      const k = randomArray(nCells * nEmbdGqa, 11, 2);
      const v = randomArray(nCells * nEmbdGqa, 12);
      kvStore(
        kCache,
        vCache,
        nCtx,
        nEmbdGqa,
        k,
        v,
        nCells,
        Int32Array.from({ length: nCells }, (_, i) => i),
      );
      for (let i = 0; i < nCells; i++) cellPos[i] = i;
      const nTokens = 3;
      const q = randomArray(nTokens * nHead * hd, 13, 2);
      const qPos = Int32Array.of(7, 8, 9);
      const out = new Float32Array(nTokens * nHead * hd);
      const args = [
        nCtx,
        nKv,
        nTokens,
        nHead,
        nHeadKv,
        hd,
        qPos,
        cellPos.subarray(0, nKv),
        f32(1 / f32(Math.sqrt(hd))),
      ] as const;
      attention(out, q, kCache, vCache, ...args);
      const expected = attentionSpec(
        q,
        k,
        v,
        nTokens,
        nKv,
        nHead,
        nHeadKv,
        hd,
        qPos,
        cellPos,
        kv === "f16",
      );
      assertClose(out, expected, 1e-5, `attention ${kv}`);
      const ref = new Float32Array(out.length);
      attentionRef(ref, q, kCache, vCache, ...args);
      assertClose(ref, expected, 1e-5, `attention ${kv} scalar reference`);
    });
  }
}

Deno.test("attention() of the first token returns its own value vector", () => {
  const [nCtx, hd] = [8, 16];
  const kCache = new Uint16Array(nCtx * hd), vCache = new Uint16Array(nCtx * hd);
  const k = randomArray(hd, 1), v = randomArray(hd, 2);
  kvStore(kCache, vCache, nCtx, hd, k, v, 1, Int32Array.of(0));
  const cellPos = Int32Array.from([0, -1, -1, -1, -1, -1, -1, -1]);
  const out = new Float32Array(hd);
  attention(
    out,
    randomArray(hd, 3),
    kCache,
    vCache,
    nCtx,
    nCtx,
    1,
    1,
    1,
    hd,
    Int32Array.of(0),
    cellPos,
    0.25,
  );
  assertClose(out, v.map(f16), 0, "single-cell attention");
});

Deno.test("activation() matches SiLU through fp16, ReGLU and ReLU·ReLU", () => {
  const n = 4096;
  const gate = randomArray(n, 21, 8), up = randomArray(n, 22, 3);
  const silu = (z: number) => {
    const x = f16(z);
    return f16(f32(x / f32(1 + f32(Math.exp(-x)))));
  };
  const relu = (z: number) => (z > 0 ? z : 0);
  const cases = {
    silu_mul: (i: number) => f32(silu(gate[i]!) * up[i]!),
    relu_mul: (i: number) => f32(relu(gate[i]!) * up[i]!),
    relu_relu_mul: (i: number) => f32(relu(gate[i]!) * relu(up[i]!)),
  } as const;
  for (const [kind, ref] of Object.entries(cases)) {
    const out = new Float32Array(n);
    activation(out, gate, up, kind as keyof typeof cases);
    // exp in f64 vs expf may differ by one f16 ulp (|silu| <= 8: ulp 2^-7), times |up| <= 3
    assertClose(
      out,
      Float32Array.from({ length: n }, (_, i) => ref(i)),
      kind === "silu_mul" ? 0.024 : 0,
      kind,
    );
  }
  const out = new Float32Array(n);
  activation(out, gate, null, "relu");
  ok(out.every((v, i) => v === relu(gate[i]!)));
});
