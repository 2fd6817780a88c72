// Signed adverts: fixed signing vector, tamper/expiry/key-mismatch rejection, DHT round trip
// across three in-process hosts, and --layers auto placement.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { identityFromSecret, generateIdentity } from '../../src/identity/identity.js';
import { createHost } from '../../src/p2p/host.js';
import { advertKey, modelCid, signAdvert, verifyAdvert, verifyAdvertRecord, AdvertError } from '../../src/p2p/advert-record.js';
import { findAdverts, serveAdverts, publishAdvert } from '../../src/p2p/adverts.js';
import { chooseLayers, layerCoverage, parseLayers } from '../../src/node/placement.js';
import { toHex } from '../../src/protocol/frame.js';

const SECRET = new Uint8Array(32).fill(1);
const FIELDS = {
  addrs: ['/ip4/127.0.0.1/tcp/4001'],
  modelId: 'abc123',
  start: 0,
  end: 2,
  msPerToken: 1.5,
  prefillMsPerToken: 0.25,
  load: 0,
  freeKvTokens: 4096,
  engine: 'reference',
  version: 'odsi/0.1.0',
  issuedAt: 1_700_000_000_000,
  ttlMs: 90_000,
};
const NOW = FIELDS.issuedAt + 1000;
// secret = 32 × 0x01; public key 031b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f
const PEER_ID = '16Uiu2HAmEWQnHq2jLKJypwVnVoQeFCULuyop6atvq2eWjYSUjzNi';
const SIG_HEX =
  '990d921b2fbce12b1324bd2feaa210d9653e0fc3bc95e4ad7a427b2968e3e93479b2cab3dce66be58e3f1676f0e28fca70f602a6a814818ec4cc8108b64d176b';

test('advert signing vector (docs/protocol.md) and verification', () => {
  const id = identityFromSecret(SECRET);
  const { advert, record } = signAdvert(id, FIELDS);
  assert.equal(advert.peerId, PEER_ID);
  const body = new TextDecoder().decode(record.subarray(64));
  assert.equal(
    body,
    `{"peerId":"${id.peerId.toString()}","addrs":["/ip4/127.0.0.1/tcp/4001"],"modelId":"abc123","start":0,"end":2,"msPerToken":1.5,"prefillMsPerToken":0.25,"load":0,"freeKvTokens":4096,"engine":"reference","version":"odsi/0.1.0","issuedAt":1700000000000,"ttlMs":90000}`,
  );
  // RFC 6979: deterministic, so the signature is a fixed vector
  assert.equal(toHex(record.subarray(0, 64)), signAdvert(id, FIELDS).advert.signature);
  assert.equal(advert.signature, SIG_HEX);
  assert.equal(id.peerId.toString(), PEER_ID);
  const back = verifyAdvertRecord(record, { now: NOW, key: advertKey('abc123', advert.peerId) });
  assert.deepEqual(back, advert);
  assert.ok(verifyAdvert(advert, NOW));
});

test('tampered, expired, future, foreign and mis-keyed adverts are rejected', () => {
  const id = identityFromSecret(SECRET);
  const { advert, record } = signAdvert(id, FIELDS);
  const tampered = record.slice();
  tampered[tampered.length - 3] ^= 1; // a digit of ttlMs
  assert.throws(() => verifyAdvertRecord(tampered, { now: NOW }), AdvertError);
  assert.throws(() => verifyAdvertRecord(record, { now: FIELDS.issuedAt + FIELDS.ttlMs + 1 }), /expired/);
  assert.throws(() => verifyAdvertRecord(record, { now: FIELDS.issuedAt - 120_000 }), /future/);
  assert.throws(() => verifyAdvertRecord(record, { now: NOW, key: advertKey('other', advert.peerId) }), /DHT key/);
  // someone else's key signing a body that claims this peer id
  const other = generateIdentity();
  const forged = signAdvert(other, FIELDS).record;
  const body = new TextEncoder().encode(new TextDecoder().decode(forged.subarray(64)).replace(other.peerId.toString(), advert.peerId));
  const f2 = new Uint8Array(64 + body.length);
  f2.set(forged.subarray(0, 64));
  f2.set(body, 64);
  assert.throws(() => verifyAdvertRecord(f2, { now: NOW }), /signature/);
  assert.ok(!verifyAdvert({ ...advert, load: 3 }, NOW));
  assert.throws(() => advertKey('bad/model', advert.peerId), /not allowed/);
});

test('adverts round-trip through the DHT of three hosts; expired ones are not returned', async () => {
  const a = await createHost({ identity: generateIdentity() });
  const b = await createHost({ identity: generateIdentity(), bootstrap: [a.addrs()[0]!] });
  const g = await createHost({ identity: generateIdentity(), bootstrap: [a.addrs()[0]!] });
  try {
    const now = Date.now();
    // wait (bounded) until the gateway's routing table has both peers
    for (let i = 0; i < 50 && (g.libp2p.services.dht as unknown as { routingTable: { size: number } }).routingTable.size < 2; i++) await new Promise((r) => setTimeout(r, 100));
    for (const [h, s, e] of [[a, 0, 3], [b, 3, 5]] as const) {
      const { advert, record } = signAdvert(h.identity, { ...FIELDS, modelId: 'dht-test', start: s, end: e, addrs: h.addrs(), issuedAt: now, ttlMs: 60_000 });
      await publishAdvert(h, advert, record, { signal: AbortSignal.timeout(10_000) });
      // a answers directly from its own record; b's advert is only in the DHT
      if (h === a) await serveAdverts(a, (m) => (m === 'dht-test' ? record : undefined));
    }
    let found = await findAdverts(g, 'dht-test', { timeoutMs: 3000 });
    for (let i = 0; i < 10 && found.length < 2; i++) {
      await new Promise((r) => setTimeout(r, 300));
      found = await findAdverts(g, 'dht-test', { timeoutMs: 3000 });
    }
    assert.deepEqual(found.map((x) => [x.peerId, x.start, x.end]), [[a.peerId, 0, 3], [b.peerId, 3, 5]]);
    // an advert that is already expired: remote validators refuse it, findAdverts never returns it
    const stale = signAdvert(b.identity, { ...FIELDS, modelId: 'dht-stale', issuedAt: now - 100_000, ttlMs: 1000 });
    await publishAdvert(b, stale.advert, stale.record, { signal: AbortSignal.timeout(5000) }).catch(() => {});
    assert.deepEqual(await findAdverts(g, 'dht-stale', { timeoutMs: 1500 }), []);
    assert.equal(modelCid('dht-test').toString(), modelCid('dht-test').toString());
  } finally {
    await Promise.all([a.stop(), b.stop(), g.stop()]);
  }
});

test('--layers auto fills the weakest coverage that fits', () => {
  assert.deepEqual(layerCoverage(4, [{ start: 0, end: 2, msPerToken: 10 }]), [100, 100, 0, 0]);
  assert.deepEqual(chooseLayers(5, 2, []), [0, 2]);
  assert.deepEqual(chooseLayers(5, 2, [{ start: 0, end: 2, msPerToken: 1 }, { start: 2, end: 4, msPerToken: 1 }]), [3, 5]);
  assert.deepEqual(chooseLayers(6, 3, [{ start: 0, end: 3, msPerToken: 1 }, { start: 3, end: 6, msPerToken: 5 }]), [3, 6]);
  assert.deepEqual(chooseLayers(4, 10, [{ start: 0, end: 4, msPerToken: 1 }]), [0, 4]);
  assert.deepEqual(parseLayers('1:3', 5), [1, 3]);
  assert.equal(parseLayers('auto', 5), 'auto');
  assert.throws(() => parseLayers('3:1', 5), /non-empty range/);
  assert.throws(() => parseLayers('0:9', 5), /5 layers/);
  assert.throws(() => parseLayers('x', 5), /"a:b"/);
});

