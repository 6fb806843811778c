/**
 * Fuzz targets of the GPU-index area, registered in `tasks/fuzz_targets.ts`: the activation
 * `.pt` reader (untrusted torch zip + pickle) and the `.gpuidx` reader. Each check must return
 * or throw a `PowerInferError` subclass.
 *
 * @module
 */

import { fileURLToPath as fromFileUrl } from "node:url";
import { gpuIndexLayer, readGpuIndex, serializeGpuIndex } from "./gpuidx.ts";
import { readActivationPt } from "./stats.ts";

function shared(path: string): string {
  return fromFileUrl(new URL(`../../../shared/fixtures/${path}`, import.meta.url));
}

/** `activation_N.pt` files (PowerInfer's activation statistics). */
export const ACTIVATION_PT_FUZZ_TARGET = {
  name: "activation-pt",
  async corpus() {
    const bytes = await Deno.readFile(shared("fortune-relu/activation/activation_0.pt"));
    const tiny = await Deno.readFile(shared("models/tiny/activation/activation_1.pt"));
    // Most of the structure (zip headers, pickle) is in the first 400 bytes and the last 300.
    return [
      { name: "fortune-relu/activation_0.pt", bytes, focusBytes: bytes.length },
      { name: "tiny/activation_1.pt", bytes: tiny, focusBytes: tiny.length },
    ];
  },
  check(bytes: Uint8Array): void {
    const counts = readActivationPt(bytes);
    let s = 0;
    for (const v of counts) s += v;
    void s;
  },
};

/** `.generated.gpuidx` files (ours and PowerInfer's). */
export const GPUIDX_FUZZ_TARGET = {
  name: "gpuidx",
  async corpus() {
    const bytes = await serializeGpuIndex({
      vramCapacity: 123456789,
      layers: [gpuIndexLayer(64, [1, 5, 9]), gpuIndexLayer(64, []), gpuIndexLayer(64, [63])],
    });
    return [{ name: "three-layers", bytes, focusBytes: Math.min(bytes.length, 512) }];
  },
  check(bytes: Uint8Array): void {
    const index = readGpuIndex(bytes);
    for (const layer of index.layers) void layer.gpuBucket.length;
  },
};
