// One input sent as several steps (a prompt in pipelined chunks) shows as one timeline: per hop
// the steps' queue, compute and send times added up, the budget and slack of the last step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeTimelines } from '../../src/route/merge-timelines.js';
import type { HopTiming } from '../../src/route/route-stage.js';

const hop = (peerId: string, computeMs: number, o: Partial<HopTiming> = {}): HopTiming => ({
  peerId,
  start: peerId === 'a' ? 0 : 2,
  end: peerId === 'a' ? 2 : 5,
  queueMs: 0.5,
  computeMs,
  sendMs: 0.25,
  budgetInMs: -1,
  slackMs: -1,
  ...o,
});

test('per hop: times added over the steps, budget and slack of the last step', () => {
  const merged = mergeTimelines([
    [hop('a', 10, { budgetInMs: 500, slackMs: 480 }), hop('b', 30, { budgetInMs: 470, slackMs: 430 })],
    [hop('a', 11, { budgetInMs: 400, slackMs: 380 }), hop('b', 31, { budgetInMs: 370, slackMs: 330 })],
    [hop('a', 12.0004, { budgetInMs: 300, slackMs: 280 }), hop('b', 32, { budgetInMs: 270, slackMs: 230 })],
  ]);
  assert.deepEqual(merged, [
    { peerId: 'a', start: 0, end: 2, queueMs: 1.5, computeMs: 33, sendMs: 0.75, budgetInMs: 300, slackMs: 280 },
    { peerId: 'b', start: 2, end: 5, queueMs: 1.5, computeMs: 93, sendMs: 0.75, budgetInMs: 270, slackMs: 230 },
  ]);
});

test('one step is its own timeline; none is empty; a hop another step does not name adds nothing', () => {
  const one = [hop('a', 10), hop('b', 30)];
  assert.deepEqual(mergeTimelines([one]), one);
  assert.deepEqual(mergeTimelines([]), []);
  // a step whose timeline is shorter, or names another peer at that place
  assert.deepEqual(
    mergeTimelines([[hop('a', 5)], [hop('x', 7), hop('b', 9)], one]).map((t) => t.computeMs),
    [15, 39],
  );
});
