// Load progress: a byte-count bar on an interactive stderr, silence otherwise (logs, --json,
// tests). Engines report bytes as they read tensors; see StageOptions.onProgress.

import cliProgress from 'cli-progress';
import { layerTensorNames, tensorNames, type WeightSource } from '../model/types.js';

export interface LoadProgress {
  /** bytes just read */
  add(bytes: number): void;
  stop(): void;
}

/** Bytes of the tensors a stage over [start,end) (plus embedding / head) reads. */
export function rangeBytes(src: WeightSource, start: number, end: number, embed: boolean, head: boolean): number {
  const names: string[] = [];
  for (let l = start; l < end; l++) names.push(...layerTensorNames(l));
  if (embed || (head && !src.has(tensorNames.output))) names.push(tensorNames.embed);
  if (head) names.push(tensorNames.outputNorm, tensorNames.output);
  return names.filter((n) => src.has(n)).reduce((s, n) => s + src.info(n).byteLength, 0);
}

export function loadProgress(label: string, totalBytes: number, enabled = process.stderr.isTTY === true): LoadProgress {
  // small models load in a blink: a bar would only flicker
  if (!enabled || totalBytes < 64 << 20) return { add() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: `${label} [{bar}] {percentage}% | {value}/{total} MiB | {duration}s`, hideCursor: true, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  );
  const mib = (b: number) => Math.round(b / (1 << 20));
  let done = 0;
  bar.start(mib(totalBytes), 0);
  return {
    add(bytes) {
      done += bytes;
      bar.update(Math.min(mib(done), mib(totalBytes)));
    },
    stop() {
      bar.update(mib(totalBytes));
      bar.stop();
    },
  };
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
