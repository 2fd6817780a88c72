// Weight-read accounting for load progress: how many bytes a stage's layer range reads, and
// a view of a weight source that reports every tensor read (util/progress.ts shows the bar).

import { layerTensorNames, tensorNames, type WeightSource } from './types.js';

/** Bytes of the tensors a stage over [start,end) (plus embedding / head) reads. */
export function rangeBytes(src: WeightSource, start: number, end: number, embed: boolean, head: boolean): number {
  const names: string[] = [];
  for (let l = start; l < end; l++) names.push(...layerTensorNames(l));
  if (embed || (head && !src.has(tensorNames.output))) names.push(tensorNames.embed);
  if (head) names.push(tensorNames.outputNorm, tensorNames.output);
  return names.filter((n) => src.has(n)).reduce((s, n) => s + src.info(n).byteLength, 0);
}

/** A view of `src` that reports every tensor read (for engines that read in this thread). */
export function trackReads(src: WeightSource, onRead: (bytes: number) => void): WeightSource {
  return new Proxy(src, {
    get(target, prop) {
      if (prop === 'readRaw' || prop === 'readF32') {
        return (name: string) => {
          const out = target[prop](name);
          onRead(target.info(name).byteLength);
          return out;
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
