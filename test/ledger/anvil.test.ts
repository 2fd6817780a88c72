// The local chain's lifecycle: it answers once started, and is gone after close() and after its
// parent is SIGKILLed (no 'exit' handler runs then: the watchdog must do it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createPublicClient, http } from 'viem';
import { startAnvil } from '../../src/ledger/evm/anvil.js';

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function gone(pid: number, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !alive(pid);
}

test('anvil starts on a free loopback port, answers, and is gone after close()', async () => {
  const a = await startAnvil({ chainId: 4242 });
  assert.match(a.rpcUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(await createPublicClient({ transport: http(a.rpcUrl) }).getChainId(), 4242);
  await a.close();
  assert.ok(await gone(a.pid, 5000));
  await assert.rejects(createPublicClient({ transport: http(a.rpcUrl, { retryCount: 0 }) }).getChainId());
});

test('a chain whose parent is SIGKILLed does not outlive it', { timeout: 30_000 }, async () => {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./anvil-child.js', import.meta.url))], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', () => reject(new Error('child exited before starting anvil')));
  });
  const { rpcUrl, pid } = JSON.parse(line) as { rpcUrl: string; pid: number };
  assert.equal(await createPublicClient({ transport: http(rpcUrl) }).getChainId(), 31337);
  child.kill('SIGKILL');
  assert.ok(await gone(pid, 10_000), 'the watchdog (and anvil with it) ended within 10 s');
  await assert.rejects(createPublicClient({ transport: http(rpcUrl, { retryCount: 0 }) }).getChainId());
});
