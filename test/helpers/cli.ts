// The real `odsi` CLI as a user runs it (node bin/odsi.js <command> …): to completion with
// runOdsi, or as a long-running process whose JSON stdout lines are read with startOdsi.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ODSI_BIN, REPO_ROOT } from './paths.js';

export interface OdsiRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `odsi <args>` to completion (killed after timeoutMs). */
export function runOdsi(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): OdsiRun {
  const r = spawnSync(process.execPath, [ODSI_BIN, ...args], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 60_000,
    env: opts.env,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** runOdsi without blocking: several may run at once (each its own process). */
export function runOdsiAsync(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<OdsiRun> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [ODSI_BIN, ...args], { cwd: REPO_ROOT, env: opts.env, timeout: opts.timeoutMs ?? 60_000 });
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    proc.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export interface RunningOdsi {
  proc: ChildProcess;
  /** next stdout line that parses as JSON (bounded wait; rejects when the process exits first) */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  nextJson(timeoutMs: number): Promise<any>;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Start `odsi <args>` with stdout read line by line. */
export function startOdsi(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): RunningOdsi {
  const what = `odsi ${args[0] ?? ''}`;
  const proc = spawn(process.execPath, [ODSI_BIN, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: opts.env });
  const lines: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l);
    else lines.push(l);
  });
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.once('exit', (code, signal) => r({ code, signal })),
  );
  const nextLine = (timeoutMs: number) =>
    new Promise<string>((resolve, reject) => {
      const l = lines.shift();
      if (l !== undefined) return resolve(l);
      const t = setTimeout(() => reject(new Error(`no output from ${what} within ${timeoutMs} ms; stderr:\n${err}`)), timeoutMs);
      void exited.then(({ code }) => {
        clearTimeout(t);
        reject(new Error(`${what} exited (${code}) early; stderr:\n${err}`));
      });
      waiters.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
  return {
    proc,
    async nextJson(timeoutMs) {
      const until = Date.now() + timeoutMs;
      for (let i = 0; i < 1000; i++) {
        const l = await nextLine(Math.max(1, until - Date.now()));
        try {
          return JSON.parse(l);
        } catch {
          /* not JSON: skip */
        }
      }
      throw new Error('no JSON line');
    },
    stderr: () => err,
    exited,
  };
}
