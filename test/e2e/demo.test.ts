// `odsi demo` as a user runs it: real processes, the JSON report, --serve, and a clean stop
// on SIGTERM that leaves no node process behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ODSI_BIN, REPO_ROOT, STORIES_GGUF, loadGolden } from '../helpers/paths.js';

interface Running {
  proc: ChildProcess;
  /** next stdout line that parses as JSON (bounded wait) */
  nextJson(timeoutMs: number): Promise<any>;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function runDemo(args: string[]): Running {
  const proc = spawn(process.execPath, [ODSI_BIN, 'demo', ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l);
    else lines.push(l);
  });
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.once('exit', (code, signal) => r({ code, signal })),
  );
  const nextLine = (timeoutMs: number) =>
    new Promise<string>((resolve, reject) => {
      const l = lines.shift();
      if (l !== undefined) return resolve(l);
      const t = setTimeout(() => reject(new Error(`no output from odsi demo within ${timeoutMs} ms; stderr:\n${err}`)), timeoutMs);
      void exited.then(({ code }) => {
        clearTimeout(t);
        reject(new Error(`odsi demo exited (${code}) early; stderr:\n${err}`));
      });
      waiters.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
  return {
    proc,
    async nextJson(timeoutMs) {
      const until = Date.now() + timeoutMs;
      for (let i = 0; i < 1000; i++) {
        const l = await nextLine(Math.max(1, until - Date.now()));
        try {
          return JSON.parse(l);
        } catch {
          /* not JSON: skip */
        }
      }
      throw new Error('no JSON line');
    },
    stderr: () => err,
    exited,
  };
}

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
  const d = runDemo([
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
    const ex = await Promise.race([d.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 20_000))]);
    if (!ex) d.proc.kill('SIGKILL');
    await waitGone(pids, 10_000);
    const left = pids.filter(alive);
    for (const p of left) process.kill(p, 'SIGKILL');
    assert.ok(ex, 'odsi demo did not exit within 20 s of SIGTERM');
    assert.deepEqual(left, [], 'node processes outlived the demo');
  }
});

test('odsi demo with no model uses the synthetic tiny model and says so', { timeout: 180_000 }, async () => {
  const d = runDemo(['--nodes', '2', '--max-tokens', '4', '--json']);
  const rep = await d.nextJson(150_000);
  const ex = await Promise.race([d.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 20_000))]);
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
