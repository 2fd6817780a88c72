// Fault injection: spec parsing, the ODSI_ALLOW_FAULTS guard (in-process and through
// `odsi node`), the behaviours' step semantics on a wrapped stage, demo option parsing, and
// ban backoff.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createNodeFaults, faultKinds, nodeFaultsOf, parseFaultSpec } from '../../src/testing/inject.js';
import { FaultSpecError, FaultsNotAllowedError } from '../../src/testing/fault-kind.js';
import { MisbehavingStage } from '../../src/testing/misbehaving-stage.js';
import type { ModelConfig } from '../../src/model/types.js';
import type { Stage } from '../../src/engine/types.js';
import { describeFaultEvent, parseNodeFaults, replicateRanges } from '../../src/testing/demo-faults.js';
import { BanList } from '../../src/routing/bans.js';
import { MsgType, type Message, type StepHeader } from '../../src/protocol/messages.js';
import type { Channel } from '../../src/p2p/channel.js';
import { ODSI_BIN, STORIES_GGUF } from '../helpers/paths.js';

/** A stage that passes its input through: what the wrappers do around it is what is tested. */
const passThrough = (): Stage => ({
  range: { start: 0, end: 1, embed: false, head: false },
  config: { dim: 2 } as ModelConfig,
  profile: 'pass-through',
  forward: async (i) => ({ hidden: Float32Array.from(i.hidden!), computeMs: 0 }),
  sessionLength: () => 0,
  closeSession: () => {},
  dispose: async () => {},
});
const step = (stage: Stage, k: number) => stage.forward({ sessionId: 's', pos: k, nTokens: 1, hidden: Float32Array.of(1, -2) });
/** whether a step is answered within 100 ms */
const answered = (p: Promise<unknown>) => Promise.race([p.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 100))]);

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
  assert.equal(createNodeFaults([], false), undefined);
  assert.throws(() => createNodeFaults(['crash@1'], false), FaultsNotAllowedError);
  assert.throws(() => createNodeFaults(['crash@1'], false), /set ODSI_ALLOW_FAULTS=1/);
  const f = createNodeFaults(['stall@2,delay:1'], true)!;
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
  const stall = new MisbehavingStage(passThrough(), [parseFaultSpec('stall@2')]);
  assert.equal(await answered(step(stall, 0)), true);
  assert.equal(await answered(step(stall, 1)), true);
  assert.equal(await answered(step(stall, 2)), false);
  assert.equal(await answered(step(stall, 3)), false);
  assert.equal(stall.dropped, 2);

  const delay = new MisbehavingStage(passThrough(), [parseFaultSpec('delay:40')]);
  const t = performance.now();
  assert.equal(await answered(step(delay, 0)), true);
  assert.ok(performance.now() - t >= 35);

  // the extension point dishonest behaviours use: output rewrites, applied in order
  const scale = (k: number) => ({ spec: `test-scale:${k}`, rewrite: (h: Float32Array) => h.map((x) => x * k) });
  const f = nodeFaultsOf([scale(2), scale(3)]).stage(passThrough());
  assert.deepEqual([...(await step(f, 0)).hidden!], [6, -12]);
});

test('drop@N passes N outputs on, then drops running sessions’ outputs and all that follows them; fresh sessions’ first steps go on', async () => {
  const sent: string[] = [];
  const send = nodeFaultsOf([parseFaultSpec('drop@2')]).onward(async (_to, m) => {
    sent.push(`${MsgType[m.type]} ${'sessionId' in m.header ? m.header.sessionId : ''}`);
  });
  const to = {} as Channel;
  const out = (sid: string, pos: number, type: MsgType.STEP | MsgType.RESULT = MsgType.STEP) =>
    send(to, { type, header: { sessionId: sid, pos } as StepHeader, payload: new Uint8Array(0) } as Message);
  const receipts = (sid: string) =>
    send(to, { type: MsgType.RECEIPTS, header: { sessionId: sid, requestId: 0, step: 0 }, payload: new Uint8Array(0) });
  await out('a', 0);
  await out('a', 1); // before the onset: passed on
  await receipts('a');
  await out('a', 2); // dropped: a running session's step
  await receipts('a'); // and everything of that session after it
  await out('a', 0); // (a re-use of the id at position 0 is still that session's)
  await out('probe', 0, MsgType.RESULT); // a fresh session's first step goes on
  await out('b', 3, MsgType.RESULT);
  await send(to, { type: MsgType.CLOSE, header: { sessionId: 'a', reason: 'x' } });
  assert.deepEqual(sent, ['STEP a', 'STEP a', 'RECEIPTS a', 'RESULT probe', 'CLOSE a']);
});

test('crash@N kills the process abruptly when step N+1 arrives', () => {
  const code = `
    const { parseFaultSpec } = await import(${JSON.stringify(new URL('../../src/testing/inject.js', import.meta.url).href)});
    const { MisbehavingStage } = await import(${JSON.stringify(new URL('../../src/testing/misbehaving-stage.js', import.meta.url).href)});
    const inner = { forward: async (i) => ({ hidden: i.hidden, computeMs: 0 }) };
    const f = new MisbehavingStage(inner, [parseFaultSpec('crash@1')]);
    await f.forward({ sessionId: 's', pos: 0, nTokens: 1, hidden: new Float32Array(1) });
    process.stdout.write('served one\\n');
    process.on('exit', () => process.stdout.write('clean exit\\n'));
    await f.forward({ sessionId: 's', pos: 1, nTokens: 1, hidden: new Float32Array(1) });
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
  const m = parseNodeFaults(['1:crash@10', '1:delay:5', '0:stall@3'], 4, true);
  assert.deepEqual(m.get(1), ['crash@10', 'delay:5']);
  assert.deepEqual(m.get(0), ['stall@3']);
  assert.throws(() => parseNodeFaults(['4:crash@1'], 4, true), /out of range/);
  assert.throws(() => parseNodeFaults(['crash@1'], 4, true), /<node-index>:<spec>/);
  assert.throws(() => parseNodeFaults(['0:boom@1'], 4, true), /unknown fault kind/);
  assert.throws(() => parseNodeFaults(['0:crash@1'], 4, false), FaultsNotAllowedError);
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

test('the demo tells a dispute and an unexplained failure from a failure found at fault', () => {
  const base = { type: 'failure' as const, at: 0, detectedAt: 0, sessionId: 's', pos: 7, code: 'bad_message', message: 'm' };
  const route = [
    { peerId: 'A', start: 0, end: 2 },
    { peerId: 'B', start: 2, end: 5 },
  ];
  const name = (p: string) => p.toLowerCase();
  const one = describeFaultEvent({ ...base, culprits: [], diagnosis: 'dispute', disputed: ['B', 'A'], route }, name);
  assert.equal(
    one,
    'failure at position 7: bad_message — b accuses a, both avoided; neither banned on one word; route was a[0:2] → b[2:5]',
  );
  const second = describeFaultEvent({ ...base, culprits: ['B'], diagnosis: 'dispute', disputed: ['B', 'A'], route }, name);
  assert.match(second, /b accuses a, both avoided; b banned \(in disputes with too many peers\)/);
  assert.match(
    describeFaultEvent({ ...base, culprits: ['A'], diagnosis: 'error_reply', route }, name),
    /^failure .*a at fault \(found by error_reply\)/,
  );
  assert.match(
    describeFaultEvent({ ...base, culprits: ['A'], diagnosis: 'error_reply', open: true, route }, name),
    /^open failed at position 7/,
  );
  const lost = { ...base, code: 'timeout', culprits: [], diagnosis: 'unknown', route };
  assert.equal(
    describeFaultEvent(lost, name),
    'failure at position 7: timeout — nobody named: every hop still answers, all doubted; route was a[0:2] → b[2:5]',
  );
  assert.match(
    describeFaultEvent({ ...lost, culprits: ['B'] }, name),
    /all doubted; b banned \(alone on the routes of three such failures\)/,
  );
});
