// Worker side of tests/model_generate_test.ts: loads a model and generates inside a Worker.
import { loadModel } from "../src/model/model.ts";

const worker = self as unknown as {
  onmessage: (e: MessageEvent<{ path: string; prompt: string }>) => void;
  postMessage(data: unknown): void;
  close(): void;
};
worker.onmessage = async (e) => {
  using model = loadModel(e.data.path, { nCtx: 64 });
  const ids: number[] = [];
  for await (const t of model.generate(e.data.prompt, { maxTokens: 8, temperature: 0 })) {
    ids.push(t.id);
  }
  worker.postMessage(ids);
  worker.close();
};
