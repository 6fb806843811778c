/**
 * `deno task inspect <file> [--json] [--full]`: what a GGUF / PowerInfer GGUF file holds (magic
 * and kind, version, alignment, metadata, tensor table, totals), like gguf-dump. Only the header
 * is read (the file is memory-mapped, tensor pages are never touched), so a 40 GB model is
 * inspected in milliseconds.
 *
 * `--json` prints one JSON object. UINT64/INT64 values are JSON numbers when they are safe
 * integers (|v| < 2^53) and decimal strings otherwise, so no reader silently loses precision;
 * non-finite floats are the strings "NaN", "Infinity", "-Infinity". Arrays longer than 16
 * elements are abridged to their first 16 (with `count` giving the full length) unless `--full`.
 *
 * @module
 */

import { parseCliArgs } from "./options.ts";
import { reportError, usageLine } from "./report_error.ts";
import { openGguf } from "../gguf/open.ts";
import { type GgufFile, ggufValueTypeName } from "../gguf/reader.ts";
import { ggmlTypeName, type GgufKv, type GgufScalar, GgufValueType } from "../gguf/types.ts";

const USAGE = `Usage: deno task inspect <file.gguf> [--json] [--full]

Prints the magic (GGUF dense / PWRI PowerInfer model or GPU index), version, alignment,
metadata (long arrays abridged) and the tensor table (name, type, shape, bytes) of a GGUF file.

Options:
  --json   one JSON object instead of text (64-bit ints beyond 2^53 as strings)
  --full   do not abridge long arrays
  -h, --help`;

const TEXT_ARRAY_ITEMS = 3;
const JSON_ARRAY_ITEMS = 16;

/** Shortest decimal that reads back as the same float32 (1e-6, not 9.999999974752427e-7). */
function f32Text(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  for (let p = 1; p < 17; p++) {
    const s = v.toPrecision(p);
    if (Math.fround(Number(s)) === v) return String(Number(s));
  }
  return String(v);
}

function scalarText(v: GgufScalar, type?: GgufValueType): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number" && type === GgufValueType.FLOAT32) return f32Text(v);
  return String(v);
}

function valueText(kv: GgufKv, full: boolean): string {
  if (kv.type !== GgufValueType.ARRAY) return scalarText(kv.value, kv.type);
  const n = kv.value.length;
  const shown = full ? kv.value : kv.value.slice(0, TEXT_ARRAY_ITEMS);
  const items = shown.map((v) => scalarText(v, kv.elementType)).join(", ");
  const unit = kv.elementType === GgufValueType.STRING
    ? "strings"
    : ggufValueTypeName(kv.elementType);
  if (n === 0) return `[0 ${unit}]`;
  return `[${n} ${unit}: ${items}${shown.length < n ? ", ..." : ""}]`;
}

function typeText(kv: GgufKv): string {
  return kv.type === GgufValueType.ARRAY
    ? `[${ggufValueTypeName(kv.elementType)}]`
    : ggufValueTypeName(kv.type);
}

function group(n: number): string {
  return n.toLocaleString("en-US");
}

/** Byte totals per ggml type name, in first-seen order. */
function totalsByType(file: GgufFile): Map<string, { tensors: number; bytes: number }> {
  const totals = new Map<string, { tensors: number; bytes: number }>();
  for (const t of file.tensors) {
    const name = ggmlTypeName(t.type);
    const e = totals.get(name) ?? { tensors: 0, bytes: 0 };
    e.tensors++;
    e.bytes += t.byteLength;
    totals.set(name, e);
  }
  return totals;
}

/** Text report of `file` (what `deno task inspect` prints). */
export function inspectText(file: GgufFile, path: string, full = false): string {
  const lines: string[] = [];
  lines.push(`file       ${path} (${group(file.byteLength)} bytes)`);
  lines.push(`magic      ${file.magic} (${file.kind}), version ${file.version}`);
  lines.push(`alignment  ${file.alignment}, data section at byte ${group(file.dataOffset)}`);
  lines.push(`metadata   ${file.metadata.size} keys`);
  const keyWidth = Math.max(0, ...[...file.metadata.keys()].map((k) => k.length));
  for (const kv of file.metadata.values()) {
    lines.push(`  ${kv.key.padEnd(keyWidth)}  ${typeText(kv).padEnd(9)} ${valueText(kv, full)}`);
  }
  const totalBytes = file.tensors.reduce((a, t) => a + t.byteLength, 0);
  lines.push(`tensors    ${file.tensors.length}, ${group(totalBytes)} bytes`);
  if (file.tensors.length > 0) {
    const rows = file.tensors.map((t, i) => [
      String(i),
      t.name,
      ggmlTypeName(t.type),
      `[${t.ne.join(", ")}]`,
      group(t.byteLength),
      group(t.offsetBytes),
    ]);
    const head = ["#", "name", "type", "ne", "bytes", "offset"];
    const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
    const fmt = (r: string[]) =>
      "  " +
      r.map((cell, c) => (c === 0 || c >= 4 ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!)))
        .join("  ").trimEnd();
    lines.push(fmt(head));
    for (const r of rows) lines.push(fmt(r));
    lines.push("totals");
    for (const [type, e] of totalsByType(file)) {
      lines.push(
        `  ${type.padEnd(5)} ${String(e.tensors).padStart(5)} tensors ${group(e.bytes)} bytes`,
      );
    }
  }
  return lines.join("\n");
}

function jsonScalar(v: GgufScalar): unknown {
  if (typeof v === "bigint") {
    return v >= -BigInt(Number.MAX_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(v)
      : v.toString();
  }
  if (typeof v === "number" && !Number.isFinite(v)) return String(v);
  return v;
}

/** The JSON report of `file` (what `deno task inspect --json` prints), as a plain object. */
export function inspectJson(file: GgufFile, path: string, full = false): Record<string, unknown> {
  return {
    path,
    byteLength: file.byteLength,
    magic: file.magic,
    kind: file.kind,
    version: file.version,
    alignment: file.alignment,
    dataOffset: file.dataOffset,
    metadata: [...file.metadata.values()].map((kv) => {
      if (kv.type !== GgufValueType.ARRAY) {
        return { key: kv.key, type: ggufValueTypeName(kv.type), value: jsonScalar(kv.value) };
      }
      const shown = full ? kv.value : kv.value.slice(0, JSON_ARRAY_ITEMS);
      return {
        key: kv.key,
        type: "ARRAY",
        elementType: ggufValueTypeName(kv.elementType),
        count: kv.value.length,
        value: shown.map(jsonScalar),
        ...(shown.length < kv.value.length ? { abridged: true } : {}),
      };
    }),
    tensors: file.tensors.map((t) => ({
      name: t.name,
      type: ggmlTypeName(t.type),
      ne: t.ne,
      offsetBytes: t.offsetBytes,
      byteLength: t.byteLength,
    })),
    totals: {
      tensors: file.tensors.length,
      bytes: file.tensors.reduce((a, t) => a + t.byteLength, 0),
      byType: Object.fromEntries(totalsByType(file)),
    },
  };
}

/** CLI entry: returns the exit status. */
export function main(args: string[]): number {
  const parsed = parseCliArgs("inspect", USAGE, {
    args,
    allowPositionals: true,
    options: {
      json: { type: "boolean" },
      full: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (typeof parsed === "number") return parsed;
  const { values, positionals } = parsed;
  if (positionals.length !== 1) {
    console.error(usageLine(`Expected one file, found ${positionals.length}`, "inspect"));
    return 1;
  }
  const path = positionals[0]!;
  try {
    using file = openGguf(path);
    const out = values.json
      ? JSON.stringify(inspectJson(file, path, values.full))
      : inspectText(file, path, values.full);
    console.log(out);
    return 0;
  } catch (error) {
    return reportError(error);
  }
}

if (import.meta.main) Deno.exit(main(Deno.args));
