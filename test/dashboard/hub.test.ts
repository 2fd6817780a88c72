// The dashboard's bounds, without a browser: the recent-requests store drops the oldest
// finished requests and each request's oldest steps, maps route events to token steps; the
// SSE stream sends a snapshot then deltas and refuses clients past its caps; the page and its
// assets are served with a CSP next to the untouched API.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createApiServer, type ApiServer } from '../../src/api/server.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { Dashboard } from '../../src/dashboard/hub.js';
import { mountDashboard } from '../../src/dashboard/http.js';
import { RecentRequests, stepView } from '../../src/dashboard/requests.js';
import type { BackendToken } from '../../src/api/backend.js';
import { STORIES_GGUF } from '../helpers/paths.js';

const token = (step: number, peers: string[]): BackendToken => ({
  id: 1,
  text: `t${step}`,
  step,
  stepMs: 10,
  timeline: {
    step,
    token: 1,
    stepMs: 10,
    hops: [
      { node: 'gateway', start: 0, end: 0, role: 'embed', computeMs: 1 },
      ...peers.map((p, i) => ({ node: p, start: i, end: i + 1, role: 'layers', computeMs: 2, queueMs: 1, sendMs: 0.5 })),
      { node: 'gateway', start: 2, end: 2, role: 'head', computeMs: 1 },
    ],
  },
});

test('recent requests: bounded requests and steps, per-hop split, route events at their token', () => {
  const r = new RecentRequests({ maxRequests: 2, maxSteps: 3 });
  const req = { promptIds: [1, 2, 3, 4], maxTokens: 8, sampling: { temperature: 0 } };
  r.started('a', req);
  r.finished('a', { finishReason: 'length' });
  r.started('b', req);
  r.started('c', req); // 'a' (finished) goes, 'b' (running) stays
  assert.deepEqual(
    r.summaries().map((s) => s.id),
    ['c', 'b'],
  );
  for (let s = 0; s < 5; s++) r.token('b', token(s, ['p1', 'p2']));
  const d = r.detail('b')!;
  assert.deepEqual(
    d.steps.map((s) => s.step),
    [2, 3, 4],
  );
  assert.equal(d.droppedSteps, 2);
  assert.equal(d.tokens, 5);
  const s = d.steps[2]!;
  assert.deepEqual(
    s.hops.map((h) => [h.peerId, h.queueMs, h.computeMs, h.sendMs]),
    [
      ['p1', 1, 2, 0.5],
      ['p2', 1, 2, 0.5],
    ],
  );
  assert.equal(s.gatewayMs, 2);
  // without the route's round trip: the token's interval less the hops' and the gateway's time
  assert.equal(s.wireMs, 10 - 2 - 7);
  assert.equal(s.heldMs, 0);
  // a failure at position 5 (4 prompt tokens + 1 generated) is the request's token #2
  const v0 = r.currentVersion;
  r.routeEvent({
    type: 'failure',
    at: 1,
    detectedAt: 1,
    sessionId: 'b',
    pos: 5,
    code: 'lost',
    message: 'gone',
    culprits: ['p1'],
    diagnosis: 'ping',
    route: [],
  });
  r.routeEvent({
    type: 'reroute',
    at: 2,
    sessionId: 'b',
    routeSessionId: 'b2',
    from: [],
    to: [],
    method: 'replay',
    replayedTokens: 5,
    recoveryMs: 3,
    diagnoseMs: 1,
    openMs: 1,
    replayMs: 1,
  });
  r.routeEvent({
    type: 'failure',
    at: 3,
    detectedAt: 3,
    sessionId: 'gone',
    pos: 1,
    code: 'x',
    message: 'x',
    culprits: [],
    diagnosis: 'ping',
    route: [],
  });
  // a dispute at a replacement's open: said so, and both peers listed when nobody was banned
  r.routeEvent({
    type: 'failure',
    at: 4,
    detectedAt: 4,
    sessionId: 'b',
    pos: 5,
    code: 'bad_message',
    message: 'p3: bad_message: hidden states from p3 are not finite',
    culprits: [],
    diagnosis: 'dispute',
    disputed: ['p4', 'p3'],
    open: true,
    route: [],
  });
  const b = r.detail('b')!;
  assert.deepEqual(
    b.events.map((e) => [e.type, e.step]),
    [
      ['failure', 2],
      ['reroute', 2],
      ['failure', 2],
    ],
  );
  assert.match(b.events[2]!.text, /^open failed: dispute \(p4 accuses p3, both avoided\): bad_message: /);
  assert.deepEqual(b.events[2]!.peers, ['p4', 'p3']);
  // a step lost with every hop still answering: nobody named, the whole route doubted
  r.routeEvent({
    type: 'failure',
    at: 5,
    detectedAt: 5,
    sessionId: 'b',
    pos: 6,
    code: 'timeout',
    message: 'no result for 1 token(s)',
    culprits: [],
    diagnosis: 'unknown',
    route: [
      { peerId: 'p5', start: 0, end: 2 },
      { peerId: 'p6', start: 2, end: 5 },
    ],
  });
  const lost = r.detail('b')!.events.at(-1)!;
  assert.match(lost.text, /^nobody named \(every hop still answers; all doubted\): timeout: /);
  assert.deepEqual(lost.peers, ['p5', 'p6']);
  assert.equal(b.reroutes, 1);
  assert.deepEqual(
    r.summaries(v0).map((x) => x.id),
    ['b'],
    'only the changed request is in the delta',
  );
  r.finished('b', { error: 'boom' });
  assert.equal(r.detail('b')!.status, 'failed');
  assert.deepEqual(r.running(), []);
});

let gw: Gateway | undefined;
let api: ApiServer | undefined;
let url = '';

before(async () => {
  gw = await Gateway.start({ modelPath: STORIES_GGUF, peers: [] });
  api = createApiServer(gw);
  mountDashboard(api.app, new Dashboard(gw, { maxClients: 3, maxClientsPerAddress: 2, tickMs: 50, pingMs: 60_000 }));
  url = await api.listen(0);
});

after(async () => {
  await api?.close();
  await gw?.close();
});

/** opens an SSE stream; resolves with its status and a reader of its text so far */
function openStream(): Promise<{ status: number; text: () => string; close: () => void }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/dashboard/events`, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (buf += d));
      resolve({ status: res.statusCode ?? 0, text: () => buf, close: () => req.destroy() });
    });
    req.on('error', reject);
    req.end();
  });
}

test('SSE: snapshot then deltas; clients past the per-address cap get 503', { timeout: 20_000 }, async () => {
  const a = await openStream();
  const b = await openStream();
  const c = await openStream();
  try {
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(c.status, 503, 'a third stream from one address is refused');
    for (let i = 0; i < 100 && !a.text().includes('event: delta'); i++) await new Promise((r) => setTimeout(r, 50));
    const events = a.text().split('\n\n').filter(Boolean);
    assert.match(events[0]!, /event: snapshot\ndata: /);
    const snap = JSON.parse(events[0]!.split('data: ')[1]!) as {
      model: { nLayers: number };
      coverage: { nodes: number }[];
      ledger?: unknown;
    };
    assert.equal(snap.model.nLayers, 5);
    assert.deepEqual(
      snap.coverage.map((x) => x.nodes),
      [0, 0, 0, 0, 0],
      'no nodes: every layer a gap',
    );
    assert.equal(snap.ledger, undefined, 'no ledger configured: no ledger panel data');
    assert.ok(events.some((e) => e.startsWith('event: delta')));
  } finally {
    a.close();
    b.close();
    c.close();
  }
  // closed streams free their slots
  for (let i = 0; i < 100; i++) {
    const d = await openStream();
    d.close();
    if (d.status === 200) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail('slots were not freed');
});

test('the page and its bundle at /, with a CSP; the API unchanged; unknown requests 404', async () => {
  const page = await fetch(`${url}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
  assert.match(await page.text(), /<script type="module" src="\/dashboard\/app.js">/);
  const js = await fetch(`${url}/dashboard/app.js`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type') ?? '', /javascript/);
  assert.ok((await js.text()).length > 10_000, 'the bundle holds preact and chart.js');
  assert.equal((await fetch(`${url}/dashboard/api/requests/no-such-request`)).status, 404);
  assert.equal((await fetch(`${url}/dashboard/api/requests/${'x'.repeat(80)}`)).status, 404);
  assert.equal((await fetch(`${url}/v1/models`)).status, 200);
});

test('with the route’s round trip, a token’s wire is its own step’s and the rest of its interval is time held before release', () => {
  const t = token(3, ['p1', 'p2']).timeline; // hops: 2 × (1 + 2 + 0.5) ms, gateway 2 ms
  // released 10 ms after the token before it; its step took 8 ms over the route
  const v = stepView({ ...t, routeMs: 8 });
  assert.equal(v.wireMs, 8 - 7);
  assert.equal(v.heldMs, 10 - 8 - 2);
  // released right behind the one before it (receipts pipelined): nothing held, its wire still its own
  const quick = stepView({ ...t, stepMs: 0.5, routeMs: 8 });
  assert.equal(quick.wireMs, 1);
  assert.equal(quick.heldMs, 0);
  // the prefill's tail (step 0) has no wire of its own
  assert.deepEqual([stepView({ ...t, step: 0, routeMs: 8 }).wireMs, stepView({ ...t, step: 0, routeMs: 8 }).heldMs], [0, 0]);
});
