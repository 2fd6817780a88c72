import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EvidenceQueue } from '../../../src/accountability/records/evidence.js';

test('enqueue is synchronous and drops the oldest on overflow', () => {
  const q = new EvidenceQueue<number>(3);
  for (let i = 0; i < 5; i++) q.enqueue(i);
  assert.deepEqual(q.stats(), { enqueued: 5, dropped: 2, consumed: 0, failed: 0, size: 3 });
  assert.deepEqual([q.shift(), q.shift(), q.shift(), q.shift()], [2, 3, 4, undefined]);
  assert.throws(() => new EvidenceQueue(0), RangeError);
});

test('enqueue never waits for a slow consumer', async () => {
  const q = new EvidenceQueue<number>(1000);
  const seen: number[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  q.start(async (x) => {
    await gate; // a consumer that cannot make progress
    seen.push(x);
  });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 100_000; i++) q.enqueue(i);
  const usPerOp = Number(process.hrtime.bigint() - t0) / 1e3 / 100_000;
  assert.ok(usPerOp < 5, `enqueue took ${usPerOp} µs`);
  const st = q.stats();
  assert.equal(st.size, 1000);
  assert.equal(st.dropped, 99_000); // the consumer never got a turn during the burst
  release();
  await q.idle();
  assert.equal(seen.length, 1000);
  assert.deepEqual([seen[0], seen.at(-1)], [99_000, 99_999]); // the newest survive, in order
  await q.stop();
});

test('consumer errors are counted and the drain goes on; stop keeps the rest queued', async () => {
  const q = new EvidenceQueue<number>(10);
  const errs: unknown[] = [];
  const ok: number[] = [];
  q.start(
    (x) => {
      if (x % 2) throw new Error(`odd ${x}`);
      ok.push(x);
    },
    (e) => errs.push(e),
  );
  for (let i = 0; i < 6; i++) q.enqueue(i);
  await q.idle();
  assert.deepEqual(ok, [0, 2, 4]);
  assert.equal(errs.length, 3);
  assert.equal(q.stats().failed, 3);
  await q.stop();
  q.enqueue(42);
  assert.equal(q.size, 1);
  assert.throws(() => {
    q.start(() => {});
    q.start(() => {});
  }, /already has a consumer/);
  await q.idle();
  await q.stop();
});
