import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { generateIdentity } from '../../src/identity/identity.js';
import { MAX_PARSED_PEER_IDS, parsePeerId } from '../../src/identity/peer-id.js';

test('parsePeerId parses as libp2p does, once per id, bounded; a malformed id throws and is not kept', async () => {
  const id = generateIdentity();
  const s = id.peerId.toString();
  const p = parsePeerId(s);
  assert.ok(p.equals(id.peerId));
  assert.deepEqual(p.publicKey?.raw, id.publicKey, 'the secp256k1 key the id embeds');
  assert.equal(parsePeerId(s), p, 'the second parse is the first one');
  for (const bad of ['', 'not-a-peer-id', `${s.slice(0, -1)}0`]) assert.throws(() => parsePeerId(bad), Error, JSON.stringify(bad));
  assert.throws(() => parsePeerId('not-a-peer-id'), Error, 'still refused: nothing was kept for it');
  // more distinct ids than it keeps: the oldest is parsed afresh (an equal, new object)
  for (let i = 0; i < MAX_PARSED_PEER_IDS; i++) parsePeerId(peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString());
  const again = parsePeerId(s);
  assert.notEqual(again, p);
  assert.ok(again.equals(p));
});
