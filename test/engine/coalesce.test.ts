// CoalescingStage (src/engine/coalesce.ts), the gateway's shared embedding and head, over the
// reference engine's stories260K head: a lone session's call starts its pass at once; with other
// sessions open, calls made in different microtasks of one tick (as a wave's results arrive in
// one read) go in one pass, each output bit-identical to the head alone; closed sessions no
// longer count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openModel } from '../../src/model/load.js';
import { createStage } from '../../src/engine/create.js';
import { CoalescingStage } from '../../src/engine/coalesce.js';
import { STORIES_GGUF } from '../helpers/paths.js';

test('calls of one tick make one pass while several sessions are open; a lone session runs at once', async () => {
  const src = openModel(STORIES_GGUF);
  const range = { start: 5, end: 5, embed: false, head: true };
  const inner = await createStage('reference', src, range);
  const alone = await createStage('reference', src, range);
  const head = new CoalescingStage(inner);
  const dim = src.config.dim;
  const hidden = (seed: number) => Float32Array.from({ length: dim }, (_, i) => Math.sin(i * 0.37 + seed));
  const call = (id: string, seed: number) => head.forward({ sessionId: id, pos: 0, nTokens: 1, hidden: hidden(seed) });
  try {
    // a lone session: its pass starts within the call
    const first = call('a', 1);
    assert.equal(head.stats.passes, 1, 'started at once');
    await first;
    await call('b', 2);
    // a and b open: a wave's calls, each a few microtasks after the last, make one pass
    const before = { ...head.stats };
    const hop = (id: string, seed: number, depth: number) => {
      let p: Promise<void> = Promise.resolve();
      for (let i = 0; i < depth; i++) p = p.then(() => undefined);
      return p.then(() => call(id, seed));
    };
    const outs = await Promise.all([hop('a', 3, 1), hop('b', 4, 3), hop('c', 5, 6)]);
    assert.deepEqual({ passes: head.stats.passes - before.passes, calls: head.stats.calls - before.calls }, { passes: 1, calls: 3 });
    for (const [i, seed] of [3, 4, 5].entries()) {
      const want = await alone.forward({ sessionId: `x${i}`, pos: 0, nTokens: 1, hidden: hidden(seed) });
      assert.deepEqual(outs[i]!.logits, want.logits, `call ${i} equals the head alone`);
    }
    // closed sessions no longer count: a lone one runs at once again
    head.closeSession('b');
    head.closeSession('c');
    const n = head.stats.passes;
    const last = call('a', 6);
    assert.equal(head.stats.passes, n + 1);
    await last;
  } finally {
    await head.dispose();
    await alone.dispose();
    src.close();
  }
});
