import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { keccak256, keccakBackend } from '../../src/util/keccak.js';
import { REPO_ROOT } from '../helpers/paths.js';

test('keccak256 runs on hash-wasm here and equals noble for every length around the 136-byte block, and at random', () => {
  assert.equal(keccakBackend, 'hash-wasm');
  // Ethereum's keccak256(""), not FIPS SHA3-256's a7ffc6f8…
  assert.equal(bytesToHex(keccak256(new Uint8Array(0))), 'c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470');
  const lengths = [...Array(300).keys(), 543, 544, 545, 704, 4096, 70_000];
  for (const n of lengths) {
    const data = randomBytes(n);
    assert.equal(bytesToHex(keccak256(data)), bytesToHex(keccak_256(data)), `${n} bytes`);
  }
  // a view into a larger buffer hashes only its own bytes; the result is a fresh array each time
  const big = randomBytes(1000);
  const view = big.subarray(100, 300);
  const a = keccak256(view);
  assert.equal(bytesToHex(a), bytesToHex(keccak_256(Uint8Array.from(view))));
  const b = keccak256(view);
  assert.notEqual(a, b);
  assert.deepEqual(a, b);
});

test('where WebAssembly cannot load, keccak256 falls back to noble with the same bytes', () => {
  const mod = pathToFileURL(resolve(REPO_ROOT, 'dist/src/util/keccak.js')).href;
  const script = `WebAssembly.compile = WebAssembly.instantiate = () => Promise.reject(new Error('WebAssembly disabled'));
    WebAssembly.Module = function () { throw new Error('WebAssembly disabled'); };
    const { keccak256, keccakBackend } = await import(${JSON.stringify(mod)});
    console.log(keccakBackend, Buffer.from(keccak256(new TextEncoder().encode('odsi'))).toString('hex'));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split(' '), ['noble', bytesToHex(keccak_256(new TextEncoder().encode('odsi')))]);
});
