// Seeded random Unicode strings for the tokenizer round-trip tests (not a test file itself).
import { seededRandom } from "./_helpers.ts";

/** Code point pools: ASCII, controls, Latin-1, Cyrillic, combining marks, CJK, Khmer, emoji... */
const POOLS: readonly (readonly [number, number])[] = [
  [0x20, 0x7e],
  [0x20, 0x20],
  [0x00, 0x1f],
  [0x7f, 0xff],
  [0x400, 0x4ff],
  [0x300, 0x36f],
  [0x4e00, 0x9fff],
  [0x1780, 0x17ff],
  [0xac00, 0xd7a3],
  [0x1f300, 0x1faff],
  [0x200b, 0x200d],
  [0xfe00, 0xfe0f],
  [0x2000, 0x2bff],
  [0x10000, 0x10ffff],
];

/**
 * A random well-formed string of 0..80 code points drawn from {@link POOLS}.
 * Surrogate code points are never drawn (astral characters come as proper pairs).
 */
export function randomUnicode(
  seed: number,
  opts: { exclude?: number[]; excludeRange?: [number, number] } = {},
): string {
  const rand = seededRandom(seed);
  const n = Math.floor(rand() * 81);
  let s = "";
  for (let i = 0; i < n; i++) {
    const [lo, hi] = POOLS[Math.floor(rand() * POOLS.length)]!;
    const cp = lo + Math.floor(rand() * (hi - lo + 1));
    if ((cp >= 0xd800 && cp <= 0xdfff) || opts.exclude?.includes(cp)) continue;
    const r = opts.excludeRange;
    if (r && cp >= r[0] && cp <= r[1]) continue;
    s += String.fromCodePoint(cp);
  }
  return s;
}
