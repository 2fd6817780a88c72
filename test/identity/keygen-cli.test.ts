import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { loadIdentity } from '../../src/identity/keystore.js';
import { register } from '../../src/cli/keygen.js';
import { ODSI_BIN } from '../helpers/paths.js';

test('odsi keygen (real CLI) writes an encrypted 0600 keystore and prints address and peer id', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-keygen-'));
  try {
    const file = join(dir, 'id.json');
    const r = spawnSync(process.execPath, [ODSI_BIN, 'keygen', '--out', file, '--scrypt-n', '1024', '--json'], {
      env: { ...process.env, ODSI_PASSPHRASE: 'correct horse' },
      encoding: 'utf8',
      timeout: 60_000,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(r.stdout) as { address: string; peerId: string; keystore: string };
    assert.match(info.address, /^0x[0-9a-fA-F]{40}$/);
    assert.match(info.peerId, /^16Uiu2/); // secp256k1 libp2p peer ids
    assert.equal(info.keystore, file);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const id = await loadIdentity(file, 'correct horse');
    assert.equal(id.address, info.address);
    assert.equal(id.peerId.toString(), info.peerId);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// The same command in-process (each CLI start loads the whole program: seconds on a busy box).
// It prints to stdout, which the test runner shares: two address/peer-id blocks appear in the log.
function program(): Command {
  const p = new Command('odsi').exitOverride();
  register(p);
  return p;
}

test('keygen refuses to clobber without --force, replaces with it, and needs a passphrase', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-keygen-'));
  try {
    const file = join(dir, 'id.json');
    process.env.ODSI_PASSPHRASE = 'pw';
    await program().parseAsync(['keygen', '--out', file, '--scrypt-n', '1024'], { from: 'user' });
    const first = (await loadIdentity(file, 'pw')).address;
    await assert.rejects(
      program().parseAsync(['keygen', '--out', file, '--scrypt-n', '1024'], { from: 'user' }),
      /already exists.*--force/,
    );
    assert.equal((await loadIdentity(file, 'pw')).address, first);
    await program().parseAsync(['keygen', '--out', file, '--scrypt-n', '1024', '--force'], { from: 'user' });
    assert.notEqual((await loadIdentity(file, 'pw')).address, first);
    await assert.rejects(program().parseAsync(['keygen', '--out', file, '--scrypt-n', '1000'], { from: 'user' }), /power of two/);
    delete process.env.ODSI_PASSPHRASE; // stdin is not a terminal under the test runner
    await assert.rejects(program().parseAsync(['keygen', '--out', join(dir, 'b.json')], { from: 'user' }), /ODSI_PASSPHRASE/);
    assert.equal(existsSync(join(dir, 'b.json')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
