// A local EVM chain for tests and the demo: anvil from the npm package @foundry-rs/anvil
// (a static binary in its platform package; nothing is downloaded at run time). It listens on
// a free loopback port it picks itself (--port 0; the port is read from its banner), the start
// wait is bounded, and the chain is killed on close(), when this process exits (a failing test
// that never reaches close()), and by a watchdog when this process is killed outright.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export interface AnvilOptions {
  /** chain id (default 31337, the EIP-712 domain odsi signs under by default) */
  chainId?: number;
  /** how long to wait for the RPC port, ms (default 10 s) */
  startTimeoutMs?: number;
  /** block time in seconds; default automine (a block per transaction) */
  blockTime?: number;
}

export interface Anvil {
  /** http://127.0.0.1:PORT */
  readonly rpcUrl: string;
  readonly chainId: number;
  /** pid of the process group leader (the watchdog on POSIX, anvil itself elsewhere) */
  readonly pid: number;
  close(): Promise<void>;
}

/** Path of the anvil binary shipped by @foundry-rs/anvil-<platform>-<arch>. */
export function anvilBinary(): string {
  const require = createRequire(import.meta.url);
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  const pkg = `@foundry-rs/anvil-${process.platform}-${arch}`;
  let dir: string;
  try {
    dir = dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    throw new Error(`no anvil binary for ${process.platform}/${process.arch}: npm package ${pkg} is not installed`);
  }
  const bin = join(dir, 'bin', process.platform === 'win32' ? 'anvil.exe' : 'anvil');
  if (!existsSync(bin)) throw new Error(`anvil binary missing at ${bin}`);
  return bin;
}

/** Starts anvil on 127.0.0.1 and resolves once it listens. */
export async function startAnvil(o: AnvilOptions = {}): Promise<Anvil> {
  const chainId = o.chainId ?? 31337;
  // no prefunded dev accounts: whoever needs gas gets it with anvil_setBalance
  const args = ['--host', '127.0.0.1', '--port', '0', '--chain-id', String(chainId), '--accounts', '0'];
  if (o.blockTime) args.push('--block-time', String(o.blockTime));
  // On POSIX anvil runs under a small sh watchdog in its own process group: the watchdog kills
  // anvil when this process is gone (even after SIGKILL, when no 'exit' handler runs), and
  // close() ends the whole group at once.
  const posix = process.platform !== 'win32';
  const child = posix
    ? spawn(
        '/bin/sh',
        [
          '-c',
          `"$0" "$@" & a=$!; while kill -0 ${process.pid} 2>/dev/null && kill -0 $a 2>/dev/null; do sleep 1; done; kill -9 $a 2>/dev/null`,
          anvilBinary(),
          ...args,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
      )
    : spawn(anvilBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = (sig: NodeJS.Signals): void => {
    try {
      if (posix) process.kill(-child.pid!, sig);
      else child.kill(sig);
    } catch {
      /* already gone */
    }
  };
  const killOnExit = (): void => kill('SIGKILL');
  process.once('exit', killOnExit);
  const timeoutMs = o.startTimeoutMs ?? 10_000;
  let port: number;
  try {
    port = await waitForPort(child, timeoutMs);
  } catch (e) {
    process.removeListener('exit', killOnExit);
    kill('SIGKILL');
    throw e;
  }
  // keep draining its log (one line per transaction) so a full pipe never blocks it
  child.stdout!.resume();
  child.stderr!.resume();
  let closed: Promise<void> | undefined;
  return {
    rpcUrl: `http://127.0.0.1:${port}`,
    chainId,
    pid: child.pid!,
    close() {
      closed ??= new Promise<void>((resolve) => {
        process.removeListener('exit', killOnExit);
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        // a dev chain holds nothing to flush: the whole group at once, so that anvil is gone
        // (its port closed) when the watchdog is, not still shutting down behind it
        kill('SIGKILL');
      });
      return closed;
    },
  };
}

function waitForPort(child: ChildProcess, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let out = '';
    const done = (err: Error | undefined, port?: number): void => {
      clearTimeout(timer);
      child.stdout!.removeListener('data', onData);
      child.removeListener('exit', onExit);
      child.removeListener('error', onError);
      if (err) reject(err);
      else resolve(port!);
    };
    const onData = (b: Buffer): void => {
      out += b.toString('utf8');
      const m = /Listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) done(undefined, Number(m[1]));
      else if (out.length > 64_000) out = out.slice(-1000);
    };
    const onExit = (code: number | null): void => done(new Error(`anvil exited (${code}) before listening: ${out.slice(-300)}`));
    const onError = (e: Error): void => done(new Error(`anvil failed to start: ${e.message}`));
    const timer = setTimeout(() => done(new Error(`anvil did not listen within ${timeoutMs} ms`)), timeoutMs);
    child.stdout!.on('data', onData);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}
