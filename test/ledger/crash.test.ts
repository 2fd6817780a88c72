// Crash safety of the SQLite ledger: a child process writing a burst of events is SIGKILLed
// at a random moment, 20 times over one file. After each kill the file must open (replay and
// verify), verify() must pass, every write the child saw acknowledged must be in the log with
// its kind, and nothing may be applied twice (balances equal what the log's events add up to).
// At the end verify() from genesis and `odsi ledger verify` (the real binary) pass on the file too.
// About 1 s per kill on an idle 2-core machine (the child's start-up dominates).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { bytesToHex } from '../../src/identity/identity.js';
import { SqliteLedger } from '../../src/ledger/sqlite/sqlite-ledger.js';
import { UNIT } from '../../src/ledger/rules.js';
import { seededUniform } from '../../src/util/rng.js';
import { testIdentity } from '../accountability/fixtures.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { runOdsi } from '../helpers/cli.js';

const KILLS = 20;
const WRITER = resolve(dirname(fileURLToPath(import.meta.url)), 'crash-writer.js');
const POLYFILL = resolve(REPO_ROOT, 'dist/src/util/polyfill.js');
const ACCOUNT = '0x00000000000000000000000000000000000000aa';

/** Runs the writer until it has acknowledged at least one burst write, then SIGKILLs it after `delayMs`. */
function runAndKill(args: string[], delayMs: number): Promise<{ acked: Map<number, string>; killedMidBurst: boolean }> {
  return new Promise((resolveP, reject) => {
    const child = spawn(process.execPath, ['--import', POLYFILL, WRITER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const acked = new Map<number, string>();
    let err = '';
    let done = false;
    let burst = false;
    const guard = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.stderr.on('data', (d) => (err += d));
    createInterface({ input: child.stdout }).on('line', (l) => {
      const m = /^ack (\d+) (\w+)$/.exec(l);
      if (m) {
        acked.set(Number(m[1]), m[2]!);
        if (burst && acked.size > 0 && !child.killed) {
          burst = false;
          setTimeout(() => child.kill('SIGKILL'), delayMs);
        }
      } else if (l === 'ready') burst = true;
      else if (l === 'done') done = true;
    });
    child.once('exit', (code, signal) => {
      clearTimeout(guard);
      if (signal !== 'SIGKILL' && code !== 0) reject(new Error(`writer exited ${code}: ${err}`));
      else resolveP({ acked, killedMidBurst: signal === 'SIGKILL' && !done });
    });
  });
}

test(
  `SIGKILL of the ledger writer during a burst, ${KILLS} times: the file verifies, no acknowledged write lost, none applied twice`,
  { timeout: 300_000 },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'odsi-ledger-crash-'));
    const path = join(dir, 'ledger.db');
    try {
      const operator = testIdentity(7001);
      const node = testIdentity(7002);
      const rng = seededUniform(12345);
      const allAcked = new Map<number, string>();
      let midBurst = 0;
      for (let i = 0; i < KILLS; i++) {
        const r = await runAndKill(
          [path, bytesToHex(operator.secret), bytesToHex(node.secret), ACCOUNT, '100000'],
          Math.floor(rng() * 120),
        );
        if (r.killedMidBurst) midBurst++;
        for (const [seq, kind] of r.acked) allAcked.set(seq, kind);
        // restart: open replays the whole log against the stored rows and verifies the
        // signatures written since the last verified checkpoint (it throws if anything disagrees)
        const L = SqliteLedger.open(path, { operator });
        const db = new Database(path, { readonly: true });
        const rows = db.prepare('SELECT seq, kind FROM events').all() as { seq: number; kind: string }[];
        db.close();
        const logged = new Map(rows.map((x) => [x.seq, x.kind]));
        for (const [seq, kind] of allAcked)
          assert.equal(logged.get(seq), kind, `acknowledged event ${seq} (${kind}) is in the log after kill ${i + 1}`);
        // applied exactly once: state equals the sum of the logged events
        const count = (k: string): bigint => BigInt(rows.filter((x) => x.kind === k).length);
        assert.equal((await L.account(ACCOUNT))?.balance ?? '0', count('deposit').toString());
        const id = (await L.identity(node.address))!;
        assert.equal(BigInt(id.stake), 1000n * UNIT + count('stake') - 1n - count('unstake'));
        assert.equal(BigInt(id.unbonding), count('unstake'));
        await L.close();
      }
      // and once more from genesis, every signature
      const L = SqliteLedger.open(path, { operator });
      const v = await L.verify();
      await L.close();
      assert.deepEqual(v.problems, []);
      assert.equal(midBurst, KILLS, 'every kill landed during the burst');
      assert.ok(allAcked.size >= KILLS * 2, `writes were acknowledged (${allAcked.size})`);
      const cli = runOdsi(['ledger', 'verify', '--ledger', `sqlite:${path}`, '--json']);
      assert.equal(cli.code, 0, cli.stderr);
      assert.equal(JSON.parse(cli.stdout).ok, true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
