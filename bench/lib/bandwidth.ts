// Memory read bandwidth as ORT sees it: ReduceSum over a buffer far larger than the caches,
// on the same number of threads as the engine. This bounds any decode step from below:
// every weight byte (and the KV cache) must be read once per token.
import ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export async function measureReadBandwidth(threads: number, mib = 512, reps = 5): Promise<{ gbPerS: number; bytes: number }> {
  const n = (mib * 2 ** 20) / 4;
  const model = onnx.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'bw',
      node: [{ opType: 'ReduceSum', input: ['x'], output: ['y'], attribute: [{ name: 'keepdims', type: 2, i: 0 }] }],
      input: [{ name: 'x', type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: n }] } } } }],
      output: [{ name: 'y', type: { tensorType: { elemType: 1, shape: { dim: [] } } } }],
    },
  }).finish();
  const s = await ort.InferenceSession.create(model, { intraOpNumThreads: threads, interOpNumThreads: 1, logSeverityLevel: 3 });
  const x = new Float32Array(n).fill(1);
  const feeds = { x: new ort.Tensor('float32', x, [n]) };
  await s.run(feeds);
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await s.run(feeds);
    best = Math.min(best, performance.now() - t0);
  }
  await s.release();
  return { gbPerS: n * 4 / (best / 1000) / 1e9, bytes: n * 4 };
}
