// What the accused's own record of a step proves (accountability/gateway/dispute-evidence.ts):
// a receipt it validly signed for the disputed session, step and layers, over output bytes that
// are not finite or not the size of the slot, and nothing else. A record signed by another key,
// for another slot, over other bytes, or under a broken signature proves nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DisputeEvidence, recordProves, type DisputeCase } from '../../src/accountability/gateway/dispute-evidence.js';
import type { OdsiHost } from '../../src/p2p/host.js';
import { hashTensor, signReceipt, type SignedReceipt } from '../../src/accountability/records/receipts.js';
import { sessionIdOf } from '../../src/accountability/records/wire.js';
import type { Identity } from '../../src/identity/identity.js';
import { DOMAIN, h, receiptBody, testIdentity } from './fixtures.js';

const DIM = 4;
const accusedId = testIdentity(1);
const other = testIdentity(2);
const c: DisputeCase = {
  accuser: 'accuser',
  accused: { peerId: accusedId.peerId.toString(), addrs: [], start: 0, end: 2 },
  hopIndex: 0,
  sessionId: 'req-1.r1',
  step: 5,
};

const bytesOf = (x: Float32Array) => new Uint8Array(x.buffer.slice(0));

/** `id`'s receipt over `out` for the case's slot, with `change` applied to the record. */
function record(
  id: Identity,
  out: Uint8Array,
  change: Record<string, unknown> = {},
): { receipt: SignedReceipt; output: { dtype: 'f32'; bytes: Uint8Array } } {
  const receipt = signReceipt(
    id,
    receiptBody({
      requestId: h('req-1'),
      sessionId: sessionIdOf(c.sessionId),
      step: c.step,
      pos: 9,
      layerStart: 0,
      layerEnd: 2,
      outputHash: hashTensor(out),
      ...change,
    }),
    DOMAIN,
  );
  return { receipt, output: { dtype: 'f32', bytes: out } };
}

const nan = bytesOf(Float32Array.of(0.5, NaN, 1, 2));
const sound = bytesOf(Float32Array.of(0.5, -1, 1, 2));

test('a non-finite or mis-sized output the accused signed for the disputed slot proves it sent bad activations', () => {
  assert.equal(recordProves(c, record(accusedId, nan), DOMAIN, DIM), 'the output it signed is not finite');
  const inf = bytesOf(Float32Array.of(Infinity, 0, 0, 0));
  assert.equal(recordProves(c, record(accusedId, inf), DOMAIN, DIM), 'the output it signed is not finite');
  const short = bytesOf(Float32Array.of(1, 2, 3));
  assert.equal(recordProves(c, record(accusedId, short), DOMAIN, DIM), '12 output bytes signed for 4 values of f32');
});

test('a sound output, or a record that is not the accused’s signature over that slot and those bytes, proves nothing', () => {
  assert.equal(recordProves(c, record(accusedId, sound), DOMAIN, DIM), undefined, 'a sound output');
  assert.equal(recordProves(c, record(other, nan), DOMAIN, DIM), undefined, 'signed by another key');
  assert.equal(recordProves(c, record(accusedId, nan, { step: 6 }), DOMAIN, DIM), undefined, 'another step');
  assert.equal(recordProves(c, record(accusedId, nan, { sessionId: sessionIdOf('req-1.r2') }), DOMAIN, DIM), undefined, 'another session');
  assert.equal(recordProves(c, record(accusedId, nan, { layerEnd: 3 }), DOMAIN, DIM), undefined, 'other layers');
  const signedSound = record(accusedId, sound);
  assert.equal(recordProves(c, { ...signedSound, output: { dtype: 'f32', bytes: nan } }, DOMAIN, DIM), undefined, 'bytes it did not sign');
  const forged = record(accusedId, nan);
  const sig = forged.receipt.signature;
  const broken = {
    ...forged,
    receipt: { ...forged.receipt, signature: `${sig.slice(0, 10)}${sig[10] === 'a' ? 'b' : 'a'}${sig.slice(11)}` as typeof sig },
  };
  assert.equal(recordProves(c, broken, DOMAIN, DIM), undefined, 'a signature that does not verify');
  assert.equal(
    recordProves(c, { receipt: { record: 'junk' }, output: { dtype: 'f32', bytes: nan } }, DOMAIN, DIM),
    undefined,
    'no receipt',
  );
  assert.equal(recordProves(c, record(accusedId, nan), { chainId: 1 }, DIM), undefined, 'signed under another domain');
});

test('only a refusal of what the hop before the accuser sent is examined: an accusation of the next hop’s reply, or of a peer not before it, is not', async () => {
  // a host that cannot fetch: every examination ends with nothing proven; what is counted is what was examined
  const ev = new DisputeEvidence({
    host: {} as OdsiHost,
    domain: DOMAIN,
    dim: DIM,
    bans: { banForGood: () => {} },
    absolve: () => {},
  });
  const hop = (peerId: string, start: number, end: number) => ({ peerId, addrs: [`/ip4/127.0.0.1/tcp/1`], start, end });
  const site = { sessionId: 's.r1', step: 3, hops: [hop('a', 0, 2), hop('b', 2, 4), hop('c', 4, 5)] };
  ev.consider('a', 'b', site); // hop 0 blames the next hop's reply: not about an output b signed to a
  ev.consider('c', 'a', site); // not the hop before c
  ev.consider('x', 'a', site); // the accuser is not on the route
  assert.equal(ev.stats.examined, 0);
  ev.consider('b', 'a', site); // b refused a's output: examined
  ev.consider('b', 'a', site); // once per session, step and accused
  await ev.settled();
  assert.deepEqual(ev.stats, { examined: 1, proven: 0 });
});
