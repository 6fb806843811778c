import { deepStrictEqual, equal, match } from "node:assert/strict";
import { tokenizeMain } from "../src/cli/tokenize.ts";
import { fixture } from "./_helpers.ts";

function run(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const status = tokenizeMain(args, (l) => out.push(l), (l) => err.push(l));
  return { status, out, err };
}

const LLAMA = fixture("ggml-vocab-llama.gguf");
const FALCON = fixture("ggml-vocab-falcon.gguf");

Deno.test("tokenize --json prints the ids with BOS for SPM vocabularies", () => {
  const r = run(["-m", LLAMA, "--json", "Hello world"]);
  equal(r.status, 0);
  deepStrictEqual(r.out.map((l) => JSON.parse(l)), [{ ids: [1, 15043, 3186] }]);
  deepStrictEqual(run(["-m", LLAMA, "--json", "--no-bos", "Hello world"]).out, [
    '{"ids":[15043,3186]}',
  ]);
});

Deno.test("tokenize --special tokenizes like main's prompt", () => {
  deepStrictEqual(run(["-m", LLAMA, "--json", "--special", "Once<0x0A>"]).out, [
    '{"ids":[1,26222,13]}',
  ]);
  deepStrictEqual(run(["-m", FALCON, "--json", "--special", "Hello<|endoftext|>"]).out, [
    '{"ids":[9856,11]}',
  ]);
});

Deno.test("tokenize prints one id and piece per line; byte pieces as <0xNN>", () => {
  const r = run(["-m", LLAMA, "--no-bos", " 🦙."]);
  deepStrictEqual(r.out, [
    '259\t"  "',
    "243\t<0xF0>",
    "162\t<0x9F>",
    "169\t<0xA6>",
    "156\t<0x99>",
    '29889\t"."',
  ]);
});

Deno.test("tokenize reports errors on one line and returns 1", () => {
  for (
    const args of [
      ["-m", "/nonexistent.gguf", "x"],
      ["-m", LLAMA],
      ["x"],
      ["-m", LLAMA, "--bogus", "x"],
      ["-m", fixture("llama-cases.json"), "x"],
    ]
  ) {
    const r = run(args);
    equal(r.status, 1, args.join(" "));
    equal(r.out.length, 0);
    equal(r.err.length, 1);
    match(r.err[0]!, /^error: [A-Z]/);
  }
});

Deno.test("tokenize as a process exits 1 with a one-line error", async () => {
  const cli = new URL("../src/cli/tokenize.ts", import.meta.url).pathname;
  const p = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, "-m", "/nonexistent.gguf", "x"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  equal(p.code, 1);
  const err = new TextDecoder().decode(p.stderr).trim().split("\n");
  equal(err.length, 1);
  match(err[0]!, /^error: .*nonexistent\.gguf/);
});
