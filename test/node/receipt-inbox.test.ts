// ReceiptInbox: a step's upstream RECEIPTS wait for the executor, bounded in count and in time,
// with no timer per step (one sweep timer per inbox, re-armed only when it fires with waits left).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_WAITING_RECEIPTS, ReceiptInbox } from '../../src/node/receipt-inbox.js';

const bytes = (n: number) => Uint8Array.of(n);
// the inbox's timer is unref'd (a node's sockets keep its process alive): this keeps the test's
async function alive<T>(f: () => Promise<T>): Promise<T> {
  const keep = setInterval(() => {}, 1000);
  try {
    return await f();
  } finally {
    clearInterval(keep);
  }
}

test('receipts that arrive before or after the take are handed over; duplicates and too many are refused', async () => {
  const box = new ReceiptInbox();
  assert.equal(box.put(0, bytes(0)), true);
  assert.equal(box.put(0, bytes(9)), false); // sent twice
  assert.deepEqual(await box.take(0, 1000), bytes(0));
  const later = box.take(1, 1000);
  assert.equal(box.put(1, bytes(1)), true);
  assert.deepEqual(await later, bytes(1));
  for (let i = 0; i < MAX_WAITING_RECEIPTS; i++) assert.equal(box.put(10 + i, bytes(i)), true);
  assert.equal(box.put(100, bytes(0)), false); // a peer cannot park more
  box.forget(10 + MAX_WAITING_RECEIPTS);
  assert.equal(box.put(100, bytes(0)), true);
  box.close();
});

test('a step whose receipts never come is given up at its deadline; close gives up every wait', () =>
  alive(async () => {
    const box = new ReceiptInbox();
    const t0 = performance.now();
    const [a, b] = await Promise.all([box.take(0, 60), box.take(1, 120)]);
    const took = performance.now() - t0;
    assert.equal(a, undefined);
    assert.equal(b, undefined);
    assert.ok(took >= 115 && took < 2000, `gave up after ${took} ms`);
    assert.equal(box.waits, 0);
    assert.equal(box.armed, false); // nothing left to sweep: no timer
    const c = box.take(2, 60_000);
    box.close();
    assert.equal(await c, undefined);
    assert.equal(box.armed, false);
    assert.equal(await box.take(3, 10), undefined); // closed: at once
  }));

test('steady state arms no timer per step: one armed timer serves every wait within its period', () =>
  alive(async () => {
    const box = new ReceiptInbox();
    for (let step = 0; step < 200; step++) {
      const p = box.take(step, 5_000);
      box.put(step, bytes(step & 255));
      assert.deepEqual(await p, bytes(step & 255));
    }
    assert.equal(box.timersArmed, 1);
    // a shorter wait than the armed one re-arms for the earlier deadline, and is still given up in time
    const t0 = performance.now();
    assert.equal(await box.take(500, 30), undefined);
    assert.ok(performance.now() - t0 < 2000);
    assert.ok(box.timersArmed >= 2 && box.timersArmed <= 4, `${box.timersArmed} timers`); // (a sweep may come a little early and re-arm)
    box.close();
  }));
