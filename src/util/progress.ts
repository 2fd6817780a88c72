// Load progress: a byte-count bar on an interactive stderr, silence otherwise (logs, --json,
// tests). Engines report bytes as they read tensors (model/reads.ts counts them); see
// StageOptions.onProgress.

import cliProgress from 'cli-progress';

export interface LoadProgress {
  /** bytes just read */
  add(bytes: number): void;
  stop(): void;
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
