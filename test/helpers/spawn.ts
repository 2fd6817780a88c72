// Spawning real `odsi node` processes for tests: wait (bounded) for the ready JSON line,
// keep stderr for diagnostics, kill on cleanup.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ODSI_BIN, REPO_ROOT } from './paths.js';

export interface Ready {
  event: 'ready';
  peerId: string;
  addrs: string[];
  modelId: string;
  start: number;
  end: number;
  msPerToken: number;
  pid: number;
}

export interface NodeProc {
  proc: ChildProcess;
  ready: Ready;
  stderr(): string;
  stop(): Promise<void>;
}

export async function spawnNode(args: string[], timeoutMs = 60_000): Promise<NodeProc> {
  const proc = spawn(process.execPath, [ODSI_BIN, 'node', ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ODSI_PASSPHRASE: undefined } });
  let err = '';
  let out = '';
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    if (err.length > 200_000) err = err.slice(-100_000);
  });
  const ready = await new Promise<Ready>((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`node did not become ready within ${timeoutMs} ms; stderr:\n${err.slice(-3000)}`));
    }, timeoutMs);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(out.slice(0, nl)) as Ready);
        } catch {
          reject(new Error(`bad ready line: ${out.slice(0, nl)}`));
        }
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`node exited with ${code} before ready; stderr:\n${err.slice(-3000)}`));
    });
  });
  return {
    proc,
    ready,
    stderr: () => err,
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        proc.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        proc.kill('SIGTERM');
      }),
  };
}

/** Resident set size of a process in bytes (Linux /proc). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Poll `fn` until it returns a value (not undefined), at most `timeoutMs`. */
export async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs: number, what: string, everyMs = 250): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
