// Fault injection: spec parsing, the ODSI_ALLOW_FAULTS guard (in-process and through
// `odsi node`), the behaviours' step semantics, demo option parsing, and ban backoff.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  FaultInjector,
  FaultSpecError,
  FaultsNotAllowedError,
  createFaultInjector,
  faultKinds,
  parseFaultSpec,
  registerFaultKind,
} from '../../src/testing/inject.js';
import { parseNodeFaults, replicateRanges } from '../../src/testing/demo-faults.js';
import { BanList } from '../../src/routing/bans.js';
import { ODSI_BIN, STORIES_GGUF } from '../helpers/paths.js';

const ALLOW = { ODSI_ALLOW_FAULTS: '1' };
const ctx = (step: number) => ({ sessionId: 's', step, pos: step, nTokens: 1 });

test('specs parse; bad specs get errors naming the known kinds', () => {
  assert.equal(parseFaultSpec('crash@3').spec, 'crash@3');
  assert.equal(parseFaultSpec(' stall@0 ').spec, 'stall@0');
  assert.equal(parseFaultSpec('delay:250').spec, 'delay:250');
  for (const bad of ['crash', 'crash@', 'crash@-1', 'crash@1.5', 'crash:3', 'delay@5', 'explode@1', 'stall@x', '']) {
    assert.throws(
      () => parseFaultSpec(bad),
      (e: Error) =>
        e instanceof FaultSpecError &&
        /crash@N/.test(
          e.message +
            faultKinds()
              .map((k) => k.syntax)
              .join(),
        ),
      bad,
    );
  }
  assert.throws(() => parseFaultSpec('explode@1'), /unknown fault kind "explode".*crash@N, stall@N, delay:MS/);
});

test('faults are refused unless ODSI_ALLOW_FAULTS=1', () => {
  assert.equal(createFaultInjector([], {}), undefined);
  assert.throws(() => createFaultInjector(['crash@1'], {}), FaultsNotAllowedError);
  assert.throws(() => createFaultInjector(['crash@1'], { ODSI_ALLOW_FAULTS: 'yes' }), /set ODSI_ALLOW_FAULTS=1/);
  const f = createFaultInjector(['stall@2,delay:1'], ALLOW)!;
  assert.deepEqual(f.specs, ['stall@2', 'delay:1']);
});

test('`odsi node --fault` without ODSI_ALLOW_FAULTS refuses to start, with a clear message', () => {
  const env = { ...process.env };
  delete env.ODSI_ALLOW_FAULTS;
  const r = spawnSync(
    process.execPath,
    [ODSI_BIN, 'node', '--model', STORIES_GGUF, '--layers', '0:5', '--fault', 'crash@3', '--bench-tokens', '0'],
    {
      env,
      encoding: 'utf8',
      timeout: 60_000,
    },
  );
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /refusing to inject faults \(crash@3\).*ODSI_ALLOW_FAULTS=1/);
  assert.doesNotMatch(r.stdout, /"event":"ready"/);
});

test('stall@N answers N steps, then drops every step; delay waits; output hooks chain', async () => {
  const stall = new FaultInjector([parseFaultSpec('stall@2')]);
  assert.equal(await stall.beforeStep(ctx(0)), 'proceed');
  assert.equal(await stall.beforeStep(ctx(1)), 'proceed');
  assert.equal(await stall.beforeStep(ctx(2)), 'drop');
  assert.equal(await stall.beforeStep(ctx(3)), 'drop');
  assert.equal(stall.dropped, 2);

  const delay = new FaultInjector([parseFaultSpec('delay:40')]);
  const t = performance.now();
  assert.equal(await delay.beforeStep(ctx(0)), 'proceed');
  assert.ok(performance.now() - t >= 35);

  // the extension point dishonest behaviours use
  registerFaultKind('test-scale', ':', {
    syntax: 'test-scale:K',
    description: 'multiplies outputs by K (test only)',
    create: (arg, spec) => ({ spec, transformOutput: (h) => h.map((x) => x * Number(arg)) }),
  });
  const f = createFaultInjector(['test-scale:2', 'test-scale:3'], ALLOW)!;
  await f.beforeStep(ctx(0));
  assert.deepEqual([...f.transformOutput(Float32Array.of(1, -2), ctx(0))], [6, -12]);
});

test('crash@N kills the process abruptly when step N+1 arrives', () => {
  const code = `
    const { FaultInjector, parseFaultSpec } = await import(${JSON.stringify(new URL('../../src/testing/inject.js', import.meta.url).href)});
    const f = new FaultInjector([parseFaultSpec('crash@1')]);
    await f.beforeStep({ sessionId: 's', step: 0, pos: 0, nTokens: 1 });
    process.stdout.write('served one\\n');
    process.on('exit', () => process.stdout.write('clean exit\\n'));
    await f.beforeStep({ sessionId: 's', step: 1, pos: 1, nTokens: 1 });
    process.stdout.write('survived\\n');`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  assert.equal(r.stdout, 'served one\n');
});

test('demo options: replicated ranges, per-node faults validated up front', () => {
  assert.deepEqual(
    replicateRanges(
      [
        [0, 2],
        [2, 5],
      ],
      2,
    ),
    [
      [0, 2],
      [2, 5],
      [0, 2],
      [2, 5],
    ],
  );
  assert.throws(() => replicateRanges([[0, 5]], 0), /--replicas/);
  const m = parseNodeFaults(['1:crash@10', '1:delay:5', '0:stall@3'], 4, ALLOW);
  assert.deepEqual(m.get(1), ['crash@10', 'delay:5']);
  assert.deepEqual(m.get(0), ['stall@3']);
  assert.throws(() => parseNodeFaults(['4:crash@1'], 4, ALLOW), /out of range/);
  assert.throws(() => parseNodeFaults(['crash@1'], 4, ALLOW), /<node-index>:<spec>/);
  assert.throws(() => parseNodeFaults(['0:boom@1'], 4, ALLOW), /unknown fault kind/);
  assert.throws(() => parseNodeFaults(['0:crash@1'], 4, {}), FaultsNotAllowedError);
});

test('bans back off exponentially, cap, expire, and are forgotten after a quiet period', () => {
  const b = new BanList({ baseMs: 100, maxMs: 500, forgetMs: 1000 });
  const t = 1_000_000;
  assert.equal(b.ban('p', 'crash', t), 100);
  assert.equal(b.ban('p', 'crash', t + 10), 200);
  assert.equal(b.ban('p', 'crash', t + 20), 400);
  assert.equal(b.ban('p', 'crash', t + 30), 500);
  assert.ok(b.isBanned('p', t + 500));
  assert.ok(!b.isBanned('p', t + 531));
  assert.deepEqual([...b.active(t + 100)], ['p']);
  assert.equal(b.ban('p', 'again', t + 531 + 2000), 100); // long after the last ban ended
  b.clear('p');
  assert.equal(b.active(t).size, 0);
});
