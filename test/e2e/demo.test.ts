// `odsi demo` as a user runs it: real processes, the JSON report, --serve, and a clean stop
// on SIGTERM that leaves no node process behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { startOdsi } from '../helpers/cli.js';
import { within } from '../helpers/wait.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pids: number[], ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (pids.some(alive) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
}

test('odsi demo --json --serve on stories260K (3 nodes, 2/2/1): golden tokens, live API, clean SIGTERM', { timeout: 180_000 }, async () => {
  const [g0, g1] = loadGolden();
  const d = startOdsi([
    'demo',
    '--model',
    STORIES_GGUF,
    '--layers',
    '0:2',
    '2:4',
    '4:5',
    '--prompt',
    g0!.prompt,
    '--max-tokens',
    String(g0!.generated_tokens.length),
    '--temperature',
    '0',
    '--json',
    '--serve',
    '--port',
    '0',
  ]);
  let pids: number[] = [];
  try {
    const rep = await d.nextJson(150_000);
    assert.deepEqual(rep.tokens, g0!.generated_tokens);
    assert.deepEqual(rep.prompt_tokens, g0!.prompt_tokens);
    assert.equal(rep.synthetic, false);
    assert.equal(rep.timeline.length, g0!.generated_tokens.length);
    assert.deepEqual(
      rep.nodes.map((n: { layers: number[] }) => n.layers),
      [
        [0, 2],
        [2, 4],
        [4, 5],
      ],
    );
    pids = rep.nodes.map((n: { pid: number }) => n.pid);
    assert.ok(pids.every(alive));
    const hops = rep.timeline[1].hops.filter((h: { role: string }) => h.role === 'layers');
    assert.deepEqual(
      hops.map((h: { node: string }) => h.node),
      rep.nodes.map((n: { peerId: string }) => n.peerId),
    );

    const serving = await d.nextJson(30_000);
    assert.equal(serving.event, 'serving');
    const r = await fetch(`${serving.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: serving.model, prompt: g1!.prompt, max_tokens: 8, temperature: 0, odsi: { timeline: true } }),
      signal: AbortSignal.timeout(60_000),
    });
    assert.equal(r.status, 200);
    const body = (await r.json()) as { odsi: { timeline: { token: number }[] } };
    assert.deepEqual(
      body.odsi.timeline.map((t) => t.token),
      g1!.generated_tokens.slice(0, 8),
    );
  } finally {
    d.proc.kill('SIGTERM');
    const ex = await within(d.exited, 20_000);
    if (!ex) d.proc.kill('SIGKILL');
    await waitGone(pids, 10_000);
    const left = pids.filter(alive);
    for (const p of left) process.kill(p, 'SIGKILL');
    assert.ok(ex, 'odsi demo did not exit within 20 s of SIGTERM');
    assert.deepEqual(left, [], 'node processes outlived the demo');
  }
});

test('odsi demo with no model uses the synthetic tiny model and says so', { timeout: 180_000 }, async () => {
  const d = startOdsi(['demo', '--nodes', '2', '--max-tokens', '4', '--json']);
  const rep = await d.nextJson(150_000);
  const ex = await within(d.exited, 20_000);
  if (!ex) d.proc.kill('SIGKILL');
  assert.ok(ex, 'odsi demo did not exit after printing its report');
  assert.equal(ex.code, 0, d.stderr());
  assert.equal(rep.synthetic, true);
  assert.match(rep.note, /meaningless/);
  assert.match(d.stderr(), /synthetic 'tiny' model.*meaningless/);
  assert.ok(rep.tokens.length > 0 && rep.tokens.length <= 4);
  assert.equal(rep.nodes.length, 2);
  const pids = rep.nodes.map((n: { pid: number }) => n.pid);
  await waitGone(pids, 10_000);
  assert.deepEqual(pids.filter(alive), []);
});
