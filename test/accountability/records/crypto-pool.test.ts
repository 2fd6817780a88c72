// The crypto worker gives the same answers as the calling thread: signatures byte-identical,
// verification verdicts and reasons identical, and a malformed record is refused before any
// thread signs it. A pool made with { worker: false } (ODSI_CRYPTO_WORKER=0) runs everything on
// the calling thread, a verification only after the I/O of the tick that asked for it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CryptoPool, useCryptoWorker } from '../../../src/accountability/records/crypto-pool.js';
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

test('on the calling thread a verification waits for the I/O of its tick (an output sent in that tick leaves first)', async () => {
  const cryptoPool = new CryptoPool({ worker: false });
  const signed = signCommitment(id, record(0), domain);
  let settled = false;
  const v = cryptoPool.verify('ExecutionCommitment', signed, domain).then((r) => {
    settled = true;
    return r;
  });
  // socket-writes.ts flushes a tick's corked writes on process.nextTick
  await new Promise<void>((resolve) => process.nextTick(resolve));
  await Promise.resolve();
  assert.equal(settled, false, 'verified before the tick ended');
  assert.deepEqual(await v, checkSigned('ExecutionCommitment', signed, domain));
});

test('ODSI_CRYPTO_WORKER: a worker unless the signature backend is the native addon; 1 and 0 force it', () => {
  assert.equal(useCryptoWorker(undefined, 'native'), false);
  assert.equal(useCryptoWorker('auto', 'native'), false);
  assert.equal(useCryptoWorker(undefined, 'libsecp256k1'), true);
  assert.equal(useCryptoWorker('', 'noble'), true);
  assert.equal(useCryptoWorker('1', 'native'), true);
  assert.equal(useCryptoWorker('0', 'noble'), false);
  assert.throws(() => useCryptoWorker('yes', 'native'), /ODSI_CRYPTO_WORKER must be auto, 1 or 0, got "yes"/);
});
