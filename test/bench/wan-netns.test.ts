// bench/wan's namespace star: built, joined by the delaying relay (an echo through it takes at
// least two one-way delays), and removed again with every process it started, also when the
// build fails half-way. Needs root (network namespaces); skipped otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/paths.js';
import { NetnsStar, isRoot, listNamespaces } from '../../bench/lib/netns.js';

const RELAY = join(REPO_ROOT, 'dist/bench/lib/wan-relay.js');
const skip = isRoot() ? false : 'needs root for network namespaces';

function ready(p: ReturnType<NetnsStar['spawn']>): Promise<void> {
  return new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error('not ready in 10 s')), 10_000);
    createInterface({ input: p.stdout! }).on('line', (l) => {
      if (l.includes('"ready"')) {
        clearTimeout(t);
        res();
      }
    });
    p.once('exit', (c) => rej(new Error(`exited ${c}`)));
  });
}

test('netns star: relay delays both ways, destroy removes namespaces and processes', { skip, timeout: 60_000 }, async () => {
  const prefix = `odsi-wantest-${process.pid}`;
  const star = NetnsStar.create(prefix, ['a', 'b'], { rateMbit: 100 });
  try {
    assert.deepEqual(
      listNamespaces().filter((n) => n.startsWith(prefix)).sort(),
      [`${prefix}-a`, `${prefix}-b`, `${prefix}-hub`],
    );
    const relay = star.spawn(
      star.hub,
      process.execPath,
      [RELAY, JSON.stringify({ mode: 'relay', delayMs: 10, jitterMs: 0, loss: 0, rules: [{ listenHost: star.hubAddr(1), listenPort: 5001, targetHost: star.addr(1), targetPort: 5001 }] })],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const echo = star.spawn(star.ns(1), process.execPath, [RELAY, JSON.stringify({ mode: 'echo', host: star.addr(1), port: 5001 })], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await Promise.all([ready(relay), ready(echo)]);
    // from namespace a, through the hub's relay, to b's echo server; b's own address is not routed
    const probe = `import('${join(REPO_ROOT, 'dist/bench/lib/link-probe.js')}').then(async (m) => {
      const r = await m.echoRtt('${star.hubAddr(1)}', 5001, 5, 64);
      const net = await import('node:net');
      const direct = await new Promise((res) => {
        const s = net.connect({ host: '${star.addr(1)}', port: 5001 }, () => { s.destroy(); res('reached'); });
        s.on('error', () => res('unreachable'));
        s.setTimeout(1500, () => { s.destroy(); res('unreachable'); });
      });
      console.log(JSON.stringify({ min: r.min, direct }));
    })`;
    const r = spawnSync('ip', ['netns', 'exec', star.ns(0), process.execPath, '-e', probe], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    const got = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { min: number; direct: string };
    assert.ok(got.min >= 19.5, `echo RTT ${got.min} ms through a 10 ms relay`);
    assert.equal(got.direct, 'unreachable', 'endpoints reach each other only through the hub relay');
    const pids = [relay.pid!, echo.pid!];
    await star.destroy();
    assert.deepEqual(listNamespaces().filter((n) => n.startsWith(prefix)), []);
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), 'process of the star still alive');
  } finally {
    star.destroySync();
  }
});

test('netns star: a build that fails half-way leaves nothing behind', { skip, timeout: 15_000 }, () => {
  const prefix = `odsi-wantest-${process.pid}-f`;
  // an endpoint name with a slash is not a valid namespace name: fails after the hub exists
  assert.throws(() => NetnsStar.create(prefix, ['ok', 'bad/name']));
  assert.deepEqual(listNamespaces().filter((n) => n.startsWith(prefix)), []);
});
