// The crypto worker gives the same answers as the calling thread: signatures byte-identical,
// verification verdicts and reasons identical, and a malformed record is refused before any
// thread signs it. A pool made with { worker: false } (ODSI_CRYPTO_WORKER=0) runs everything on the calling thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CryptoPool } from '../../../src/accountability/records/crypto-pool.js';
import { generateIdentity } from '../../../src/identity/identity.js';
import { ZERO_HASH, toBytes32, type ExecutionCommitment } from '../../../src/accountability/records/eip712.js';
import { checkSigned, commitmentHash, signCommitment } from '../../../src/accountability/records/receipts.js';

const domain = { chainId: 31337 };
const id = generateIdentity();
const record = (step: number): ExecutionCommitment => ({
  requestId: toBytes32('req'),
  sessionId: toBytes32('sess'),
  step,
  pos: step,
  nTokens: 1,
  layerStart: 0,
  layerEnd: 2,
  modelId: ZERO_HASH,
  profile: 'reference',
  inputHash: toBytes32(`input-${step}`),
  budgetUs: 0,
  signer: id.address,
});

for (const mode of ['worker', 'calling thread']) {
  test(`crypto pool (${mode}) signs and verifies exactly like the synchronous functions`, async () => {
    const cryptoPool = new CryptoPool({ worker: mode === 'worker' });
    for (let step = 0; step < 8; step++) {
      const r = record(step);
      const { digest, signature } = await cryptoPool.sign('ExecutionCommitment', r, id.secret, domain);
      const sync = signCommitment(id, r, domain);
      assert.equal(signature, sync.signature);
      assert.equal(digest, commitmentHash(r, domain));
      assert.deepEqual(await cryptoPool.verify('ExecutionCommitment', sync, domain), checkSigned('ExecutionCommitment', sync, domain));
      const forged = { record: { ...r, step: step + 1 }, signature };
      const v = await cryptoPool.verify('ExecutionCommitment', forged, domain);
      assert.equal(v.ok, false);
      assert.deepEqual(v, checkSigned('ExecutionCommitment', forged, domain));
    }
    await assert.rejects(cryptoPool.sign('ExecutionCommitment', { ...record(0), step: -1 }, id.secret, domain));
    const garbage = await cryptoPool.verify('ExecutionCommitment', { record: 'x', signature: 'y' }, domain);
    assert.equal(garbage.ok, false);
  });
}
