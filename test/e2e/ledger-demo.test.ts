// The ledger end to end (issue 12): `odsi demo --ledger sqlite:PATH --serve` with one dishonest
// node (ODSI_ALLOW_FAULTS: node 2, a replica of layers [0,3), adds noise from its second step),
// audits at rate 1. Requests through the official `openai` client until the dishonest node has
// been routed to and caught (bounded); once the demo's epochs (every 5 s with --serve) have
// settled every request, the ledger shows: the dishonest node slashed with its evidence and no
// longer eligible, the honest nodes that served paid per layer-step, the client charged
// exactly what `usage` said (× the price per token), payments in = rewards out + fees. The
// real planner and auditor choice over the ledger's view never pick the slashed node again.
// The same test runs with `--ledger evm` (the demo's own anvil chain and contracts).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { openLedger } from '../../src/ledger/open.js';
import type { Address, Ledger } from '../../src/ledger/ledger.js';
import { LedgerStakeView } from '../../src/ledger/stake-view.js';
import { CostPlanner, StaticCandidates } from '../../src/routing/planner.js';
import { addressOfPeerId, peerEligible } from '../../src/routing/stake.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { startOdsi } from '../helpers/cli.js';

interface DemoNode {
  peerId: string;
  addrs: string[];
  layers: [number, number];
}

async function ledgerDemo(t: TestContext, backend: 'sqlite' | 'evm'): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-ledger-demo-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const spec = backend === 'sqlite' ? `sqlite:${join(dir, 'ledger.db')}` : 'evm';
  const d = startOdsi(
    ['demo', '--model', STORIES_GGUF, '--nodes', '2', '--replicas', '2', '--fault', '2:noise:0.05@1', '--audit-rate', '1', '--max-tokens', '4', '--json', '--serve', '--port', '0', '--ledger', spec],
    { env: { ...process.env, ODSI_ALLOW_FAULTS: '1' } },
  );
  t.after(async () => {
    d.proc.kill('SIGTERM');
    await d.exited;
  });
  const first = await d.nextJson(150_000);
  assert.ok(first.ledger.epoch >= 1, 'the demo settled its prompt before printing');
  const serving = await d.nextJson(30_000);
  assert.equal(serving.event, 'serving');
  if (backend === 'sqlite') assert.equal(serving.ledger, spec);
  const ledger: Ledger = await openLedger(serving.ledger);
  t.after(() => ledger.close());
  const nodes = first.nodes as DemoNode[];
  const cheat = addressOfPeerId(nodes[2]!.peerId)! as Address;
  let usageTokens = first.usage.total_tokens as number;

  // the planner draws replicas by stake weight: request until the cheat was routed to and slashed (bounded)
  const client = new OpenAI({ baseURL: serving.api, apiKey: 'none', maxRetries: 0, timeout: 60_000 });
  const slashed = async () => ((await ledger.identity(cheat))?.slashes.length ?? 0) > 0;
  let requests = 0;
  for (; requests < 24 && !(await slashed()); requests++) {
    const r = await client.completions.create({ model: serving.model, prompt: 'Once upon a time', max_tokens: 4, temperature: 0 });
    usageTokens += r.usage!.total_tokens;
    // let the evidence drain: up to 500 ms, over as soon as the slash is on the ledger
    if (requests % 4 === 3) for (let i = 0; i < 10 && !(await slashed()); i++) await new Promise((res) => setTimeout(res, 50));
  }
  // two more after the slash: served by honest nodes only, charged too
  for (let i = 0; i < 2; i++) {
    const r = await client.completions.create({ model: serving.model, prompt: 'The little dog', max_tokens: 4, temperature: 0 });
    usageTokens += r.usage!.total_tokens;
  }
  const expected = BigInt(usageTokens) * ledger.params.pricePerToken;
  const charged = async () => BigInt((await ledger.status()).accounts[0]?.charged ?? '0');
  for (let i = 0; i < 300 && (await charged()) < expected; i++) await new Promise((res) => setTimeout(res, 100)); // ≤ 30 s

  const st = await ledger.status();
  const byAddr = new Map(st.identities.map((i) => [i.address.toLowerCase(), i]));
  const bad = byAddr.get(cheat.toLowerCase())!;
  assert.ok(bad.slashes.length >= 1, `the dishonest node was not slashed after ${requests} requests`);
  assert.equal(bad.slashes[0]!.kind, 'computation');
  assert.ok(BigInt(bad.slashed) > 0n && bad.eligible === false);
  assert.equal(bad.earned, '0', 'a slashed identity forfeits its credits');
  // honest nodes: paid for layer-steps; the ones that served earned
  const honest = nodes.filter((_, i) => i !== 2).map((n) => byAddr.get(addressOfPeerId(n.peerId)!.toLowerCase())!);
  const served = honest.filter((h) => h.layerSteps > 0);
  assert.ok(served.length >= 2, 'both ranges were served by honest nodes');
  for (const h of served) assert.ok(BigInt(h.earned) > 0n, `${h.address} served ${h.layerSteps} layer-steps but earned nothing`);
  for (const h of honest) assert.equal(h.slashes.length, 0);
  // the client: charged exactly usage × price
  assert.equal(st.accounts.length, 1);
  assert.equal(BigInt(st.accounts[0]!.charged), expected);
  assert.equal(BigInt(st.totals.charged), BigInt(st.totals.rewards) + BigInt(st.totals.fees));
  if (backend === 'sqlite') assert.equal((await ledger.verify()).ok, true);

  // no longer routed to nor chosen as auditor: the real planner over the ledger's view
  const view = await LedgerStakeView.open(ledger, { refreshMs: 0 });
  assert.equal(peerEligible(view, nodes[2]!.peerId), false, 'the slashed node may not audit');
  const cands = nodes.map((n) => ({ peerId: n.peerId, addrs: n.addrs, start: n.layers[0], end: n.layers[1], msPerToken: 1, load: 0, freeKvTokens: 1e6 }));
  const planner = new CostPlanner(new StaticCandidates(cands), { nLayers: 5, stake: view, seed: 1 });
  for (let i = 0; i < 200; i++) assert.ok(!planner.route().hops.some((h) => h.peerId === nodes[2]!.peerId));
}

test('demo --ledger sqlite: the dishonest node is slashed and dropped, honest nodes paid per layer-step, the client charged its usage', { timeout: 300_000 }, (t) =>
  ledgerDemo(t, 'sqlite'),
);

test('demo --ledger evm (anvil + contracts): the same', { timeout: 300_000 }, (t) => ledgerDemo(t, 'evm'));
