// Child `odsi` processes (demo swarms, test and bench nodes): where the launcher is, and a
// last line of defence so that however this process ends, its children end with it.

import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** bin/odsi.js of this checkout (from dist/src/util or src/util) */
export function odsiBin(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const up of ['../../..', '../..']) {
    const p = resolve(here, up, 'bin/odsi.js');
    if (existsSync(p)) return p;
  }
  throw new Error('cannot find bin/odsi.js next to this build');
}

const live = new Set<ChildProcess>();
let hooked = false;

/** SIGKILL `proc` if this process exits while it still runs. */
export function killOnExit(proc: ChildProcess): ChildProcess {
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      for (const p of live) {
        try {
          p.kill('SIGKILL');
        } catch {
          /* already gone */
        }
      }
    });
  }
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  return proc;
}
