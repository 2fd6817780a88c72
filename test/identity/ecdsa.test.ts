import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { ecdsa, isHighS, nativeEcdsa, nobleEcdsa, wasmEcdsa, type EcdsaBackend } from '../../src/identity/ecdsa.js';
import { checkSignature, recoverSigner, signDigest } from '../../src/accountability/records/receipts.js';
import { addressFromPublicKey } from '../../src/identity/identity.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { testIdentity } from '../accountability/fixtures.js';

const N = secp256k1.Point.CURVE().n;
const word = (x: bigint) => hexToBytes(x.toString(16).padStart(64, '0'));

function wasm(): EcdsaBackend {
  const w = wasmEcdsa();
  assert.ok(w.backend, `tiny-secp256k1 should load here: ${w.error}`);
  return w.backend;
}

function native(): EcdsaBackend {
  const n = nativeEcdsa();
  assert.ok(n.backend, `the secp256k1 addon should load here (linux-x64 prebuild): ${n.error}`);
  return n.backend;
}

/** the two libsecp256k1 builds, each checked against noble */
const fastBackends = () => [native(), wasm()];

test('the native libsecp256k1 is the default backend when it loads, then the WASM one', () => {
  assert.equal(native().name, 'native');
  assert.equal(wasm().name, 'libsecp256k1');
  if (!process.env.ODSI_ECDSA) assert.equal(ecdsa().name, 'native');
  // the load-time self-test vector is noble's signature
  const s = nobleEcdsa.sign(new Uint8Array(32).fill(0xab), new Uint8Array(32).fill(0x11));
  assert.equal(
    bytesToHex(s.rs),
    '5b8478db7aca5ce61cb05a96ae1a82f63d3cf68e74012dfe74f8379aee6f2e1e0fa6b21ba8c6d03e4877ccb11f3abfdbbe033d9594eb8c2b4055807ee1964b1d',
  );
  assert.equal(s.recovery, 0);
});

test('every backend signs 200 random (key, digest) pairs byte-identically and recovers the same key', () => {
  // edge digests too: zero, all-ones (≥ n: reduced mod n by RFC 6979 bits2octets), n, n − 1
  const digests = [new Uint8Array(32), new Uint8Array(32).fill(0xff), word(N), word(N - 1n)];
  for (const fast of fastBackends())
    for (let i = 0; i < 200; i++) {
      const secret = secp256k1.utils.randomSecretKey();
      const digest = i < digests.length ? digests[i]! : randomBytes(32);
      const a = fast.sign(digest, secret);
      const b = nobleEcdsa.sign(digest, secret);
      assert.equal(bytesToHex(a.rs), bytesToHex(b.rs), `pair ${i}`);
      assert.equal(a.recovery, b.recovery, `pair ${i}`);
      assert.ok(!isHighS(a.rs.subarray(32)), 'low-s');
      const pub = secp256k1.getPublicKey(secret, false);
      assert.deepEqual(fast.recover(digest, a.rs, a.recovery as 0 | 1), pub);
      assert.deepEqual(nobleEcdsa.recover(digest, b.rs, b.recovery as 0 | 1), pub);
      if (i < 40) {
        // the known-key check: exactly ecrecover's answer, so the other v must fail (fresh key
        // copies: a repeat key makes noble build its ~100 ms window table, tested below)
        const wrongV = (a.recovery ^ 1) as 0 | 1;
        for (const be of [fast, nobleEcdsa]) {
          assert.equal(be.recoversTo(digest, a.rs, a.recovery as 0 | 1, pub.slice()), true, `${be.name} pair ${i}`);
          assert.equal(be.recoversTo(digest, a.rs, wrongV, pub.slice()), false, `${be.name} pair ${i} flipped v`);
        }
      }
    }
});

test('recoversTo is false, never a throw, for another key, another digest or garbage', () => {
  const id = testIdentity(5);
  const pub = secp256k1.getPublicKey(id.secret, false);
  const otherPub = secp256k1.getPublicKey(testIdentity(6).secret, false);
  const digest = randomBytes(32);
  for (const be of [...fastBackends(), nobleEcdsa]) {
    const { rs, recovery } = be.sign(digest, id.secret);
    const v = recovery as 0 | 1;
    // repeated: the noble backend switches to a precomputed table for Q on the second use
    for (let k = 0; k < 3; k++) assert.equal(be.recoversTo(digest, rs, v, pub), true, be.name);
    assert.equal(be.recoversTo(digest, rs, v, otherPub), false, be.name);
    assert.equal(be.recoversTo(randomBytes(32), rs, v, pub), false, be.name);
    assert.equal(be.recoversTo(digest, new Uint8Array(64), v, pub), false, be.name);
    assert.equal(be.recoversTo(digest, new Uint8Array(64).fill(0xff), v, pub), false, be.name);
    // a digest that is not 32 bytes follows noble's bits2int on both
    const long = randomBytes(40);
    const sl = be.sign(long, id.secret);
    assert.equal(be.recoversTo(long, sl.rs, sl.recovery as 0 | 1, pub), true, `${be.name} 40-byte digest`);
  }
});

test('inputs outside libsecp256k1 domain behave as with noble', () => {
  for (const fast of fastBackends()) {
    const secret = testIdentity(1).secret;
    // digests that are not 32 bytes: noble's bits2int rules, on both
    for (const len of [0, 31, 33, 64]) {
      const d = randomBytes(len);
      assert.deepEqual(fast.sign(d, secret), nobleEcdsa.sign(d, secret), `digest of ${len} bytes`);
    }
    // bad keys throw on both
    for (const bad of [new Uint8Array(32), word(N), new Uint8Array(31).fill(1)]) {
      assert.throws(() => fast.sign(randomBytes(32), bad));
      assert.throws(() => nobleEcdsa.sign(randomBytes(32), bad));
    }
  }
});

test('verify (no recovery id): every backend accepts exactly the low-s signature, compressed or uncompressed key', () => {
  const id = testIdentity(9);
  const other = testIdentity(10);
  const digest = randomBytes(32);
  const pubs = [secp256k1.getPublicKey(id.secret, true), secp256k1.getPublicKey(id.secret, false)];
  const rs = nobleEcdsa.sign(digest, id.secret).rs;
  // the high-s twin verifies under plain ECDSA; odsi refuses it (malleability)
  const twin = new Uint8Array(rs);
  twin.set(word(N - BigInt(`0x${bytesToHex(rs.subarray(32))}`)), 32);
  for (const be of [...fastBackends(), nobleEcdsa]) {
    for (const pub of pubs) assert.equal(be.verify(digest, rs, pub), true, `${be.name} ${pub.length}-byte key`);
    assert.equal(be.verify(digest, twin, pubs[0]!), false, `${be.name} high-s`);
    assert.equal(be.verify(randomBytes(32), rs, pubs[0]!), false, `${be.name} other digest`);
    assert.equal(be.verify(digest, rs, secp256k1.getPublicKey(other.secret, true)), false, `${be.name} other key`);
    assert.equal(be.verify(digest, new Uint8Array(64), pubs[0]!), false, `${be.name} zero signature`);
    assert.equal(be.verify(digest, rs.subarray(0, 63), pubs[0]!), false, `${be.name} short signature`);
    assert.equal(be.verify(digest, rs, new Uint8Array(33).fill(2)), false, `${be.name} not a curve point`);
  }
  // what noble's default (sha256 prehash) signs is the sign of the sha256 digest on every backend
  const msg = randomBytes(300);
  const h = Uint8Array.from(createHash('sha256').update(msg).digest());
  for (const be of fastBackends()) assert.equal(bytesToHex(be.sign(h, id.secret).rs), bytesToHex(secp256k1.sign(msg, id.secret)), be.name);
});

test('isHighS splits at n / 2', () => {
  const half = N >> 1n;
  assert.equal(isHighS(word(half)), false);
  assert.equal(isHighS(word(half + 1n)), true);
  assert.equal(isHighS(word(1n)), false);
  assert.equal(isHighS(word(N - 1n)), true);
});

test('signatures that do not recover give a reason on both backends, never a key', () => {
  const digest = randomBytes(32);
  const rs = (r: bigint, s: bigint) => new Uint8Array([...word(r), ...word(s)]);
  const bad = [
    rs(0n, 1n), // r = 0
    rs(1n, 0n), // s = 0
    rs(N, 1n), // r = n
    rs(5n, 1n), // 5 is not the x coordinate of a curve point
  ];
  for (const b of [...fastBackends(), nobleEcdsa])
    for (const sig of bad) assert.throws(() => b.recover(digest, sig, 0), Error, `${b.name} ${bytesToHex(sig)}`);
  for (const sig of bad) {
    const hex = `0x${bytesToHex(sig)}1b`;
    const r = recoverSigner(digest, hex);
    assert.ok('error' in r && /does not recover/.test(r.error), JSON.stringify(r));
    assert.match(checkSignature(digest, hex, testIdentity(1).address) ?? '', /does not recover/);
  }
});

test('checkSignature with a cached key still rejects flipped v, the high-s twin and another claimant', () => {
  const id = testIdentity(7);
  const other = testIdentity(8);
  const digest = randomBytes(32);
  const sig = signDigest(digest, id.secret);
  assert.equal(checkSignature(digest, sig, id.address), undefined); // caches id's key
  assert.equal(checkSignature(digest, sig, id.address.toLowerCase()), undefined); // cached path
  const bytes = hexToBytes(sig.slice(2));
  // v flipped: plain ECDSA verify against the key would pass; ecrecover yields another key
  const flipped = new Uint8Array(bytes);
  flipped[64] = bytes[64] === 27 ? 28 : 27;
  const e1 = checkSignature(digest, `0x${bytesToHex(flipped)}`, id.address);
  assert.ok(e1 !== undefined && /signed by|does not recover/.test(e1), e1);
  // high-s twin
  const twin = new Uint8Array(flipped);
  twin.set(word(N - BigInt(`0x${bytesToHex(bytes.subarray(32, 64))}`)), 32);
  assert.match(checkSignature(digest, `0x${bytesToHex(twin)}`, id.address) ?? '', /malleable/);
  // another digest, another claimant, garbage
  assert.match(checkSignature(randomBytes(32), sig, id.address) ?? '', /signed by/);
  assert.equal(checkSignature(digest, sig, other.address), `signed by ${id.address}, claims ${other.address}`);
  assert.match(checkSignature(digest, '0x1234', id.address) ?? '', /65 bytes/);
  assert.match(checkSignature(digest, 42 as unknown as string, id.address) ?? '', /65 bytes/);
  // the recovered key names the signer on both backends
  const v = (bytes[64]! - 27) as 0 | 1;
  for (const b of [...fastBackends(), nobleEcdsa])
    assert.equal(addressFromPublicKey(b.recover(digest, bytes.subarray(0, 64), v)), id.address);
});

test('ODSI_ECDSA selects the backend in a real process; auto falls back native → WASM → noble; a wrong value is a clear error', () => {
  const mod = pathToFileURL(resolve(REPO_ROOT, 'dist/src/identity/ecdsa.js')).href;
  // BREAK_NATIVE: native addons refuse to load (no binary for the platform); BREAK_WASM: the WASM
  // engine refuses modules, as where WebAssembly is disabled
  const script = `if (process.env.BREAK_NATIVE) process.dlopen = function () { throw new Error('native addons disabled'); };
    if (process.env.BREAK_WASM) WebAssembly.Module = function () { throw new Error('WebAssembly disabled'); };
    const { ecdsa, parseEcdsaChoice, selectEcdsa } = await import(${JSON.stringify(mod)});
    selectEcdsa(parseEcdsaChoice(process.env.ODSI_ECDSA)); // as the CLI does at start-up
    const b = ecdsa(); const s = b.sign(new Uint8Array(32).fill(3), new Uint8Array(32).fill(9));
    console.log(b.name, Buffer.from(s.rs).toString('hex'), s.recovery);`;
  const run = (value: string, broken: { native?: boolean; wasm?: boolean } = {}) =>
    spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: {
        ...process.env,
        ODSI_ECDSA: value,
        ...(broken.native ? { BREAK_NATIVE: '1' } : {}),
        ...(broken.wasm ? { BREAK_WASM: '1' } : {}),
      },
      encoding: 'utf8',
      timeout: 30_000,
    });
  const ok = (value: string, broken: { native?: boolean; wasm?: boolean } = {}) => {
    const r = run(value, broken);
    assert.equal(r.status, 0, `${value} ${JSON.stringify(broken)}: ${r.stderr}`);
    return r.stdout.trim().split(' ');
  };
  const [nName, ...nSig] = ok('noble');
  assert.equal(nName, 'noble');
  // every backend, named or picked by auto, signs the same bytes
  assert.deepEqual(ok('native'), ['native', ...nSig]);
  assert.deepEqual(ok('libsecp256k1'), ['libsecp256k1', ...nSig]);
  assert.deepEqual(ok('auto'), ['native', ...nSig]);
  assert.deepEqual(ok('auto', { native: true }), ['libsecp256k1', ...nSig]);
  assert.deepEqual(ok('auto', { native: true, wasm: true }), ['noble', ...nSig]);
  // a backend named explicitly is required: it says why it cannot load
  const noNative = run('native', { native: true });
  assert.notEqual(noNative.status, 0);
  assert.match(noNative.stderr, /ODSI_ECDSA=native but the secp256k1 addon cannot load: native addons disabled/);
  const noWasm = run('libsecp256k1', { wasm: true });
  assert.notEqual(noWasm.status, 0);
  assert.match(noWasm.stderr, /ODSI_ECDSA=libsecp256k1 but tiny-secp256k1 cannot load: WebAssembly disabled/);
  const bogus = run('openssl');
  assert.notEqual(bogus.status, 0);
  assert.match(bogus.stderr, /ODSI_ECDSA must be auto, native, libsecp256k1 or noble/);
});
