// Operating a swarm, against a running `odsi demo --serve --node-metrics` (real node processes,
// real gateway): `odsi status` (from the gateway and from the DHT) lists every node and every
// layer's coverage, and every node's metrics port plus the gateway's /metrics serve valid
// Prometheus exposition whose step, byte and session metrics move while requests run.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { REPO_ROOT, STORIES_GGUF } from '../helpers/paths.js';
import { runOdsi, startOdsi, type RunningOdsi } from '../helpers/cli.js';
import { post } from '../helpers/http.js';
import { parseExposition, total, type Family } from '../helpers/prometheus.js';
import { within } from '../helpers/wait.js';
import { ACT_PROTOCOL } from '../../src/protocol/messages.js';

interface DemoNode {
  peerId: string;
  layers: [number, number];
  metrics?: string;
}
let demo: RunningOdsi | undefined;
let url = '';
let bootstrap = '';
let nodes: DemoNode[] = [];
const LAYERS = 5; // stories260K

before(
  async () => {
    demo = startOdsi(['demo', '-m', STORIES_GGUF, '--nodes', '3', '--serve', '--json', '--port', '0', '--node-metrics', '-n', '4']);
    for (let i = 0; i < 5; i++) {
      const m = await demo.nextJson(90_000);
      if (m.event !== 'serving') continue;
      url = m.url;
      bootstrap = m.bootstrap[0];
      nodes = m.nodes;
      break;
    }
    assert.ok(url, 'demo did not report serving');
  },
  { timeout: 120_000 },
);

after(async () => {
  if (demo && demo.proc.exitCode === null) {
    demo.proc.kill('SIGTERM');
    await within(demo.exited, 10_000);
  }
});

async function scrape(u: string): Promise<Map<string, Family>> {
  const r = await fetch(u, { signal: AbortSignal.timeout(10_000) });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseExposition(await r.text());
}

function checkStatus(st: {
  nodes: { peerId: string; layers: [number, number]; reachable: boolean; engine: string }[];
  coverage: { layer: number; nodes: number; peers: string[]; tokensPerSec: number }[];
  uncovered: unknown[];
}): void {
  assert.deepEqual(st.nodes.map((n) => n.peerId).sort(), nodes.map((n) => n.peerId).sort(), 'every node listed');
  for (const n of st.nodes) {
    const d = nodes.find((x) => x.peerId === n.peerId)!;
    assert.deepEqual(n.layers, d.layers);
    assert.equal(n.reachable, true);
    assert.equal(n.engine, 'reference');
  }
  assert.equal(st.coverage.length, LAYERS);
  for (const c of st.coverage) {
    const serving = nodes.filter((n) => n.layers[0] <= c.layer && c.layer < n.layers[1]).map((n) => n.peerId);
    assert.deepEqual(c.peers.sort(), serving.sort(), `layer ${c.layer}`);
    assert.equal(c.nodes, serving.length);
    assert.ok(c.tokensPerSec > 0);
  }
  assert.deepEqual(st.uncovered, []);
}

test('odsi status --gateway (with and without /v1) lists every node and every layer; text view too', () => {
  const r = runOdsi(['status', '--gateway', `${url}/v1`, '--json'], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
  const st = JSON.parse(r.stdout);
  checkStatus(st);
  assert.equal(st.ready, true);
  assert.equal(st.route.length, 3);
  // the base URL without /v1, and the terminal view
  const t = runOdsi(['status', '--gateway', url], { timeoutMs: 30_000 });
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /every layer covered/);
  for (const n of nodes) assert.ok(t.stdout.includes(n.peerId), `text lists ${n.peerId}`);
  for (let l = 0; l < LAYERS; l++) assert.match(t.stdout, new RegExp(`^ +${l} +1 `, 'm'));
});

test('odsi status --bootstrap reads the signed adverts from the DHT itself', () => {
  const r = runOdsi(['status', '--bootstrap', bootstrap, '-m', STORIES_GGUF, '--json'], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  const st = JSON.parse(r.stdout);
  checkStatus(st);
  assert.equal(st.ready, true);
});

test('odsi status: clear errors for a wrong gateway and for missing arguments', () => {
  const none = runOdsi(['status', '--json']);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /one of --gateway URL or --bootstrap/);
  const bad = runOdsi(['status', '--gateway', 'http://127.0.0.1:9/v1', '--timeout-ms', '2000']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /cannot reach the gateway/);
});

test("every node's metrics port and the gateway's /metrics serve valid exposition whose metrics move during a run", async () => {
  assert.equal(nodes.length, 3);
  assert.ok(nodes.every((n) => n.metrics?.startsWith('http://127.0.0.1:')));
  const before = await Promise.all(nodes.map((n) => scrape(n.metrics!)));
  const gwBefore = await scrape(`${url}/metrics`);
  const r = await post(url, '/v1/completions', { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 });
  assert.equal(r.status, 200, r.text);
  // a session stays open on every node while a stream is read: the sessions gauge shows it
  const streaming = fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'stories260K', prompt: 'Once', max_tokens: 40, temperature: 0, stream: true }),
  });
  const res = await streaming;
  const reader = res.body!.getReader();
  await reader.read(); // the first token is out: the route is open
  const during = await Promise.all(nodes.map((n) => scrape(n.metrics!)));
  for (let i = 0; i < 10 && !(await reader.read()).done; i++);
  await reader.cancel();
  const afterRun = await Promise.all(nodes.map((n) => scrape(n.metrics!)));
  for (const [i, n] of nodes.entries()) {
    const b = before[i]!;
    const a = afterRun[i]!;
    const layers = { layers: `${n.layers[0]}:${n.layers[1]}` };
    const moved = (fam: string, sample = fam, where = {}) => total(a, fam, sample, where) - total(b, fam, sample, where);
    assert.ok(moved('odsi_node_steps_total', 'odsi_node_steps_total', layers) >= 8, `${n.peerId}: steps counted`);
    assert.ok(moved('odsi_node_step_tokens_total') >= 8 + 4);
    for (const h of ['odsi_node_step_compute_seconds', 'odsi_node_step_queue_seconds', 'odsi_node_step_send_seconds'])
      assert.ok(moved(h, `${h}_count`, layers) >= 8, `${h} observed`);
    // continuous batching: one observation per scheduler iteration, each at least one session
    const iters = moved('odsi_node_batch_sessions', 'odsi_node_batch_sessions_count', layers);
    assert.ok(iters >= 1 && moved('odsi_node_batch_sessions', 'odsi_node_batch_sessions_sum', layers) >= iters, 'batch sizes observed');
    assert.ok(moved('odsi_node_received_bytes_total', 'odsi_node_received_bytes_total', { protocol: ACT_PROTOCOL }) > 0, 'bytes in');
    assert.ok(moved('odsi_node_sent_bytes_total') > 0, 'bytes out');
    assert.ok(total(during[i]!, 'odsi_node_sessions') >= 1, 'a session open during the stream');
    assert.ok(total(during[i]!, 'odsi_node_kv_reserved_bytes') > 0, 'KV reserved during the stream');
    assert.ok(total(a, 'odsi_node_kv_budget_bytes') > 0);
    for (const fam of [
      'odsi_node_refusals_total',
      'odsi_node_audits_served_total',
      'odsi_node_session_refusals_total',
      'odsi_node_relayed_errors_total',
      'odsi_node_advert_publish_seconds',
    ])
      assert.ok(a.has(fam), `${fam} exposed`);
  }
  const gw = await scrape(`${url}/metrics`);
  assert.ok(total(gw, 'odsi_generated_tokens_total') - total(gwBefore, 'odsi_generated_tokens_total') >= 8);
  assert.equal(total(gw, 'odsi_gateway_nodes', 'odsi_gateway_nodes', { state: 'usable' }), 3);
  assert.equal(total(gw, 'odsi_gateway_uncovered_layers'), 0);
  assert.ok(total(gw, 'odsi_gateway_verified_steps_total') > total(gwBefore, 'odsi_gateway_verified_steps_total'), 'receipts checked');
  assert.ok(total(gw, 'odsi_gateway_dht_lookup_seconds', 'odsi_gateway_dht_lookup_seconds_count') >= 1);
  for (const fam of [
    'odsi_gateway_recoveries_total',
    'odsi_gateway_audits_total',
    'odsi_gateway_evidence_total',
    'odsi_gateway_disputes_total',
    'odsi_gateway_dispute_bans_total',
    'odsi_gateway_dispute_proofs_total',
    'odsi_gateway_unexplained_failures_total',
    'odsi_gateway_unexplained_bans_total',
    'odsi_fallback_requests_total',
  ])
    assert.ok(gw.has(fam), `${fam} exposed`);
  // every metric the sample Grafana dashboard charts exists
  const grafana = readFileSync(resolve(REPO_ROOT, 'docs/grafana-odsi.json'), 'utf8');
  const charted = new Set([...grafana.matchAll(/\bodsi_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|count|sum)$/, '')));
  assert.ok(charted.size >= 20);
  for (const name of charted)
    assert.ok(gw.has(name) || afterRun.some((a) => a.has(name)), `${name} (charted in docs/grafana-odsi.json) is exposed`);
  // a node's metrics port answers only GET /metrics
  const other = await fetch(nodes[0]!.metrics!.replace(/\/metrics$/, '/'), { signal: AbortSignal.timeout(5_000) });
  assert.equal(other.status, 404);
});

test('the strict exposition parser refuses malformed text', () => {
  assert.throws(() => parseExposition('# TYPE x_total counter\nx_total 1'), /newline/);
  assert.throws(() => parseExposition('# TYPE x counter\nx 1\n'), /_total/);
  assert.throws(() => parseExposition('y 1\n'), /undeclared/);
  assert.throws(() => parseExposition('# TYPE g gauge\ng{a="1} 1\n'), /malformed/);
  assert.throws(() => parseExposition('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n'), /cumulative/);
  assert.equal(parseExposition('# HELP g a gauge\n# TYPE g gauge\ng{a="x\\"y"} 1.5e3\n').get('g')!.samples[0]!.value, 1500);
});
