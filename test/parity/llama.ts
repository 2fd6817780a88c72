// node-llama-cpp (llama.cpp 3.22.1 bindings) opened offline, CPU only: the parity oracle.
import type { Llama, LlamaModel } from 'node-llama-cpp';

let llamaP: Promise<Llama> | undefined;

export async function getCpuLlama(): Promise<Llama> {
  process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD ??= 'true';
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  llamaP ??= getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, maxThreads: 1 });
  return llamaP;
}

export async function loadLlamaModel(modelPath: string, opts: { vocabOnly?: boolean } = {}): Promise<LlamaModel> {
  const llama = await getCpuLlama();
  return llama.loadModel({ modelPath, gpuLayers: 0, vocabOnly: opts.vocabOnly, useMmap: true });
}

/**
 * Greedy continuation in llama.cpp: one sequence, one thread, temperature 0 (argmax sampler),
 * EOG tokens yielded like any other so the stream is comparable token for token.
 */
export async function llamaGreedy(model: LlamaModel, promptIds: number[], n: number): Promise<number[]> {
  const context = await model.createContext({ contextSize: 256, batchSize: 256, sequences: 1, threads: 1 });
  try {
    const seq = context.getSequence();
    const out: number[] = [];
    for await (const t of seq.evaluate(promptIds as never[], { temperature: 0, yieldEogToken: true })) {
      out.push(t as number);
      if (out.length >= n) break;
    }
    return out;
  } finally {
    await context.dispose();
  }
}
