// Shared test helpers: fixture paths and tolerant comparisons.
import { fileURLToPath as fromFileUrl } from "node:url";

/** Path of a small fixture copied into tests/fixtures/. */
export function fixture(name: string): string {
  return fromFileUrl(new URL(`./fixtures/${name}`, import.meta.url));
}

/** Path of a file under ../shared/fixtures (beside the repo root; read-only). */
export function sharedFixture(name: string): string {
  return fromFileUrl(new URL(`../../shared/fixtures/${name}`, import.meta.url));
}

/** Whether a shared fixture exists (tests that need big files skip honestly when it does not). */
export function hasSharedFixture(name: string): boolean {
  try {
    Deno.statSync(sharedFixture(name));
    return true;
  } catch {
    return false;
  }
}

/** Deterministic PRNG (mulberry32) for seeded random test inputs. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Largest |a[i]-b[i]| with its index; throws a readable message when above `tol`. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what = "values",
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length} != expected ${expected.length}`);
  }
  let worst = -1;
  let worstDiff = 0;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (!(d <= worstDiff)) {
      worstDiff = d;
      worst = i;
    }
  }
  if (!(worstDiff <= tol)) {
    throw new Error(
      `${what}: worst |diff| ${worstDiff} > ${tol} at index ${worst}: actual ${
        actual[worst]
      }, expected ${expected[worst]}`,
    );
  }
}
