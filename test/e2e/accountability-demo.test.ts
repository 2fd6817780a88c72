// `odsi demo --audit-rate 1 --replicas 2 --fault …` as a user runs it (real processes): the
// --json output lists audits, verdicts and evidence, each naming an identity and a demo node
// index; only the dishonest nodes are ever accused, and the text equals an honest run's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildLocalPipeline, disposePipeline } from '../../src/engine/create.js';
import { generate } from '../../src/engine/generate.js';
import { openModel } from '../../src/model/load.js';
import { createTokenizer } from '../../src/tokenizer/index.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { runOdsi } from '../helpers/cli.js';

interface DemoJson {
  text: string;
  nodes: { peerId: string }[];
  accountability: {
    enabled: boolean;
    audits: { node: number; identity: string; step: number; pass: boolean; peerId: string }[];
    verdicts: { node: number; identity: string; verdict: { pass: boolean } }[];
    evidence: { kind: string; node: number; identity: string; peerId: string; reason: string }[];
  };
}

function demo(extra: string[]): DemoJson {
  const r = runOdsi(['demo', '--model', STORIES_GGUF, '--nodes', '2', '--max-tokens', '8', '--audit-rate', '1', '--json', ...extra], {
    timeoutMs: 110_000,
    env: { ...process.env, ODSI_ALLOW_FAULTS: '1' },
  });
  assert.equal(r.code, 0, `demo failed: ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split('\n')[0]!) as DemoJson;
}

async function honestText(): Promise<string> {
  const src = openModel(STORIES_GGUF);
  const tok = createTokenizer(src.tokenizer!);
  const pipe = await buildLocalPipeline('reference', src, 1);
  try {
    const r = await generate(pipe, tok, tok.encode('Once upon a time', { addBos: true }), { maxTokens: 8, sampling: { temperature: 0 } });
    return r.text;
  } finally {
    await disposePipeline(pipe);
    src.close();
  }
}

test('demo --audit-rate 1 with dishonest replicas: accused = dishonest nodes only, text = honest text', { timeout: 240_000 }, async () => {
  // nodes 0,2 serve [0,3), nodes 1,3 serve [3,5); 2 and 3 cheat from their second step on
  const d = demo(['--replicas', '2', '--fault', '2:noise:0.05@1', '--fault', '3:zeros@1']);
  const a = d.accountability;
  assert.equal(a.enabled, true);
  assert.ok(a.audits.length >= 8, `audits: ${a.audits.length}`);
  for (const x of a.audits) {
    assert.ok(x.node >= 0 && x.node < 4, JSON.stringify(x));
    assert.match(x.identity, /^0x[0-9a-fA-F]{40}$/);
    if (x.node < 2) assert.equal(x.pass, true, `honest node ${x.node} failed an audit`);
    if (x.node >= 2 && x.step >= 1) assert.equal(x.pass, false, `dishonest node ${x.node} passed step ${x.step}`);
  }
  assert.ok(a.verdicts.length >= 1 && a.verdicts.every((v) => /^0x/.test(v.identity)));
  for (const e of a.evidence) {
    assert.ok(e.node === 2 || e.node === 3, `accused node ${e.node}: ${e.reason}`);
    assert.equal(e.peerId, d.nodes[e.node]!.peerId);
  }
  const cheatedOnRoute = a.audits.some((x) => x.node >= 2 && x.step >= 1);
  assert.equal(a.evidence.length > 0, cheatedOnRoute);
  // what a single honest local pipeline generates for the demo's default prompt
  assert.equal(d.text, await honestText());
});
