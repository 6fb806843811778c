/**
 * A safe unpickler for the subset of Python's pickle format that `torch.save` writes
 * (protocols 2-4 opcodes for containers, numbers, strings, globals, REDUCE/BUILD/NEWOBJ and
 * persistent ids). Nothing is executed: globals resolve only through the caller's `findGlobal`,
 * and any other global is an error.
 *
 * Python values map to: None → null, bool → boolean, int → number (bigint past 2^53), float →
 * number, str → string, bytes → Uint8Array, tuple and list → array, dict → Map, set → Set.
 *
 * @module
 */

import { CheckpointFormatError } from "../errors.ts";

/** A callable or class the pickle names with GLOBAL; resolved by the caller. */
export interface PickleCallable {
  /** Called by REDUCE / NEWOBJ with the argument tuple. */
  call(args: unknown[]): unknown;
  /** Called by BUILD with the state; default: ignore the state. */
  build?(obj: unknown, state: unknown): unknown;
}

/** Hooks that give meaning to globals and persistent ids. */
export interface UnpickleOptions {
  /** Resolves `module.name`; return undefined to reject the global. */
  findGlobal(module: string, name: string): PickleCallable | undefined;
  /** Resolves a persistent id (BINPERSID); torch uses it for storages. */
  persistentLoad?(pid: unknown): unknown;
}

/** A global as an object on the stack (so BUILD and REDUCE can find its hooks). */
export class GlobalRef {
  constructor(readonly module: string, readonly name: string, readonly impl: PickleCallable) {}
}

/** Objects that REDUCE made, remembering which callable made them (for BUILD). */
const builtBy = new WeakMap<object, PickleCallable>();

/**
 * Runs the pickle program in `bytes` and returns the object it builds.
 *
 * @param bytes A pickle stream (one object, ending in STOP).
 * @param options Global and persistent-id resolvers.
 * @returns The unpickled value.
 * @throws {CheckpointFormatError} On a truncated or malformed stream, an unknown opcode or a
 * global that `findGlobal` rejects.
 */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions): unknown {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const latin1 = new TextDecoder("latin1");
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;

  const fail = (msg: string): never => {
    throw new CheckpointFormatError(`Pickle: ${msg} (at byte ${pos})`);
  };
  const need = (n: number): void => {
    if (n < 0 || pos + n > bytes.byteLength) {
      fail(`truncated: need ${n} bytes, ${bytes.byteLength - pos} left`);
    }
  };
  const u8 = (): number => {
    need(1);
    return bytes[pos++]!;
  };
  const u16 = (): number => {
    need(2);
    const v = view.getUint16(pos, true);
    pos += 2;
    return v;
  };
  const u32 = (): number => {
    need(4);
    const v = view.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const i32 = (): number => {
    need(4);
    const v = view.getInt32(pos, true);
    pos += 4;
    return v;
  };
  const u64 = (): number => {
    need(8);
    const v = view.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`length ${v} is too large`);
    return Number(v);
  };
  const take = (n: number): Uint8Array => {
    need(n);
    const out = bytes.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  const utf8 = (n: number): string => {
    const raw = take(n);
    try {
      return decoder.decode(raw);
    } catch (cause) {
      throw new CheckpointFormatError(`Pickle: invalid UTF-8 string (at byte ${pos - n})`, {
        cause,
      });
    }
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail("unterminated text line");
    const s = latin1.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks.at(-1)!)) {
      fail("stack underflow");
    }
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail("stack underflow");
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) fail("no MARK on the stack");
    return stack.splice(m!);
  };
  const memoGet = (key: number): unknown => {
    if (!memo.has(key)) fail(`memo key ${key} is not set`);
    return memo.get(key);
  };
  const signedLong = (raw: Uint8Array): number | bigint => {
    if (raw.length === 0) return 0;
    // torch writes small ints; a huge LONG would only cost quadratic time here.
    if (raw.length > 64) fail(`LONG of ${raw.length} bytes: at most 64 supported`);
    let v = 0n;
    for (let i = raw.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(raw[i]!);
    if (raw[raw.length - 1]! & 0x80) v -= 1n << BigInt(raw.length * 8);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(v)
      : v;
  };
  const resolveGlobal = (module: string, name: string): GlobalRef => {
    const impl = options.findGlobal(module, name);
    if (!impl) fail(`unsupported global ${module}.${name}`);
    return new GlobalRef(module, name, impl!);
  };
  const callGlobal = (fn: unknown, args: unknown): unknown => {
    if (!(fn instanceof GlobalRef)) fail("REDUCE/NEWOBJ target is not a global");
    if (!Array.isArray(args)) fail("REDUCE/NEWOBJ arguments are not a tuple");
    const g = fn as GlobalRef;
    let out: unknown;
    try {
      out = g.impl.call(args as unknown[]);
    } catch (cause) {
      if (cause instanceof CheckpointFormatError) throw cause;
      throw new CheckpointFormatError(
        `Pickle: calling ${g.module}.${g.name} failed (at byte ${pos})`,
        { cause },
      );
    }
    if (out !== null && typeof out === "object") builtBy.set(out, g.impl);
    return out;
  };
  const setItems = (target: unknown, items: unknown[]): void => {
    if (!(target instanceof Map)) fail("SETITEM(S) target is not a dict");
    if (items.length % 2 !== 0) fail("SETITEMS has an odd number of items");
    for (let i = 0; i < items.length; i += 2) {
      (target as Map<unknown, unknown>).set(items[i], items[i + 1]);
    }
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail("unsupported pickle protocol");
        break;
      case 0x95: // FRAME
        u64();
        break;
      case 0x2e: { // STOP
        if (stack.length !== 1) fail(`STOP with ${stack.length} values on the stack`);
        return stack[0];
      }
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x8f: // EMPTY_SET
        stack.push(new Set());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x4a: // BININT
        stack.push(i32());
        break;
      case 0x8a: // LONG1
        stack.push(signedLong(take(u8())));
        break;
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0) fail("negative LONG4 length");
        stack.push(signedLong(take(n)));
        break;
      }
      case 0x49: { // INT (text)
        const s = line();
        if (s === "00") stack.push(false);
        else if (s === "01") stack.push(true);
        else {
          const v = Number(s);
          if (!Number.isInteger(v)) fail(`bad INT ${JSON.stringify(s)}`);
          stack.push(v);
        }
        break;
      }
      case 0x4c: { // LONG (text)
        const s = line().replace(/L$/, "");
        if (!/^-?\d+$/.test(s)) fail(`bad LONG ${JSON.stringify(s)}`);
        const v = BigInt(s);
        stack.push(
          v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
            ? Number(v)
            : v,
        );
        break;
      }
      case 0x47: { // BINFLOAT (big-endian double)
        need(8);
        stack.push(view.getFloat64(pos, false));
        pos += 8;
        break;
      }
      case 0x46: { // FLOAT (text)
        const v = Number(line());
        stack.push(v);
        break;
      }
      case 0x58: // BINUNICODE
        stack.push(utf8(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(utf8(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(utf8(u64()));
        break;
      case 0x54: { // BINSTRING (py2 str)
        const n = i32();
        if (n < 0) fail("negative BINSTRING length");
        stack.push(latin1.decode(take(n)));
        break;
      }
      case 0x55: // SHORT_BINSTRING
        stack.push(latin1.decode(take(u8())));
        break;
      case 0x42: // BINBYTES
        stack.push(take(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(take(u8()).slice());
        break;
      case 0x8e: // BINBYTES8
        stack.push(take(u64()).slice());
        break;
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
        stack.push(memoGet(u8()));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(memoGet(u32()));
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x74: // TUPLE
        stack.push(popMark());
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        const a = pop();
        stack.push([a, b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push([a, b, c]);
        break;
      }
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x64: { // DICT
        const items = popMark();
        const d = new Map();
        setItems(d, items);
        stack.push(d);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        const list = top();
        if (!Array.isArray(list)) fail("APPEND target is not a list");
        (list as unknown[]).push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const list = top();
        if (!Array.isArray(list)) fail("APPENDS target is not a list");
        for (const v of items) (list as unknown[]).push(v);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x90: { // ADDITEMS
        const items = popMark();
        const set = top();
        if (!(set instanceof Set)) fail("ADDITEMS target is not a set");
        for (const v of items) (set as Set<unknown>).add(v);
        break;
      }
      case 0x91: // FROZENSET
        stack.push(new Set(popMark()));
        break;
      case 0x63: { // GLOBAL
        const module = line();
        const name = line();
        stack.push(resolveGlobal(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          fail("STACK_GLOBAL needs two strings");
        }
        stack.push(resolveGlobal(module as string, name as string));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        stack.push(callGlobal(fn, args));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = pop();
        const cls = pop();
        stack.push(callGlobal(cls, args));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        const obj = top();
        const impl = obj !== null && typeof obj === "object" ? builtBy.get(obj) : undefined;
        if (impl?.build) stack[stack.length - 1] = impl.build(obj, state);
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop();
        if (!options.persistentLoad) fail("persistent id without a loader");
        stack.push(options.persistentLoad!(pid));
        break;
      }
      case 0x50: { // PERSID (text)
        const pid = line();
        if (!options.persistentLoad) fail("persistent id without a loader");
        stack.push(options.persistentLoad!(pid));
        break;
      }
      default:
        pos--;
        fail(`unsupported opcode 0x${op.toString(16).padStart(2, "0")}`);
    }
  }
}
