// Audit re-execution on real `odsi node` processes (stories260K): an honest [2,5] node replays
// committed inputs of 4 steps (8-token prefill + 3 decode steps, one of them sent as f16) as
// one batched prefill and must return the audited step's rows equal to a local reference
// stage run step by step, under a receipt that checks out. Bad requests get clear refusals
// and leave the node serving. A node started with noise:0.05 lies when it audits.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { createStage } from '../../src/engine/create.js';
import type { Stage } from '../../src/engine/types.js';
import { generateIdentity } from '../../src/identity/identity.js';
import { openModel } from '../../src/model/load.js';
import { modelIdentity } from '../../src/model/identity.js';
import type { WeightSource } from '../../src/model/types.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { decodeTensor, encodeTensor, type Dtype } from '../../src/protocol/messages.js';
import { NodeProcess, freePort } from '../../src/node/process.js';
import { AuditExecServer } from '../../src/accountability/node/audit-exec.js';
import { ReexecError, requestReexecution, type ReexecRequest } from '../../src/accountability/gateway/reexec-client.js';
import { createNodeFaults } from '../../src/testing/inject.js';
import { CryptoPool } from '../../src/accountability/records/crypto-pool.js';
import { checkSigned, hashTensor } from '../../src/accountability/records/receipts.js';
import { NodeStamper } from '../../src/accountability/node/stamper.js';
import { toModelId } from '../../src/accountability/records/wire.js';
import { addressOfPeer, deploymentDomain, requestIdOf, sessionIdOf } from '../../src/accountability/records/wire.js';

/** the domain the test's nodes sign under (their environment's, as `odsi node` reads it) */
const DOMAIN = deploymentDomain(process.env);
import type { Hex } from '../../src/accountability/records/eip712.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';

let dir = '';
let modelId = '';
let src: WeightSource | undefined;
let host: OdsiHost | undefined;
const stages: Stage[] = [];
let honest: NodeProcess | undefined;
let liar: NodeProcess | undefined;
/** committed inputs of the [2,5] hop and the local [2,5] output of the last step */
const steps: ReexecRequest['steps'] = [];
let expected = new Float32Array(0);
const DIM = 64;
const AUDITED: Hex = `0x${'ab'.repeat(32)}`;

before(
  async () => {
    dir = mkdtempSync(join(tmpdir(), 'odsi-auditexec-'));
    src = openModel(STORIES_GGUF);
    modelId = modelIdentity(src).modelId;
    const start = (name: string, faults?: string[]) =>
      NodeProcess.start({
        model: STORIES_GGUF,
        range: [2, 5],
        identityFile: join(dir, `${name}.key`),
        modelId,
        announceIntervalMs: 600_000,
        faults,
      });
    const nodes = Promise.all([start('honest'), start('liar', ['noise:0.05'])]);
    const embed = await createStage('reference', src, { start: 0, end: 0, embed: true, head: false });
    const first = await createStage('reference', src, { start: 0, end: 2, embed: false, head: false });
    const mine = await createStage('reference', src, { start: 2, end: 5, embed: false, head: false });
    stages.push(embed, first, mine);
    // the token path: [0,2] output (as sent, maybe f16) is the [2,5] hop's committed input
    const g = loadGolden()[0]!;
    const toks = [...g.prompt_tokens, ...g.generated_tokens].slice(0, 11);
    const plan: { n: number; dtype: Dtype }[] = [
      { n: 8, dtype: 'f32' },
      { n: 1, dtype: 'f32' },
      { n: 1, dtype: 'f16' },
      { n: 1, dtype: 'f32' },
    ];
    let pos = 0;
    for (const [k, p] of plan.entries()) {
      const e = await embed.forward({ sessionId: 's', pos, nTokens: p.n, tokens: Int32Array.from(toks.slice(pos, pos + p.n)) });
      const h = await first.forward({ sessionId: 's', pos, nTokens: p.n, hidden: e.hidden! });
      const input = Uint8Array.from(encodeTensor(h.hidden!, p.dtype));
      const o = await mine.forward({ sessionId: 's', pos, nTokens: p.n, hidden: decodeTensor(input, p.dtype, p.n * DIM) });
      steps.push({ step: k, pos, nTokens: p.n, dtype: p.dtype, input });
      expected = Float32Array.from(o.hidden!);
      pos += p.n;
    }
    host = await createHost({ identity: generateIdentity() });
    [honest, liar] = await nodes;
  },
  { timeout: 60_000 },
);

after(async () => {
  await Promise.all([honest, liar].map((n) => n?.kill('SIGTERM').catch(() => undefined)));
  await host?.stop().catch(() => undefined);
  for (const s of stages) await s.dispose();
  src?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const request = (over: Partial<ReexecRequest> = {}): ReexecRequest => ({
  routeSessionId: 'sess-1.r1',
  step: 3,
  layers: [2, 5],
  modelId,
  auditedReceiptHash: AUDITED,
  steps,
  ...over,
});
const peer = (n: NodeProcess) => ({ peerId: n.peerId, addrs: n.info.addrs });

function maxAbs(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
function relL2(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - b[i]!) ** 2;
    n += b[i]! ** 2;
  }
  return Math.sqrt(d / n);
}

test('an honest node re-executes the committed prefix; output and receipt check out', { timeout: 30_000 }, async () => {
  const r = await requestReexecution(host!, DOMAIN, peer(honest!), request());
  assert.equal(r.output.length, DIM);
  const diff = maxAbs(r.output, expected);
  console.log(
    `audit re-execution: max |Δ| vs local step-by-step reference = ${diff} (${diff === 0 ? 'bit-identical' : 'within tolerance'}), ${r.ms.toFixed(1)} ms round trip`,
  );
  assert.ok(diff <= 1e-5, `max abs diff ${diff}`);
  const rec = r.receipt.record;
  assert.ok(checkSigned('ReexecutionReceipt', r.receipt, DOMAIN).ok);
  assert.ok(!checkSigned('ExecutionReceipt', r.receipt, DOMAIN).ok, 'a re-execution receipt never verifies as a token-path receipt');
  assert.equal(rec.signer.toLowerCase(), addressOfPeer(honest!.peerId).toLowerCase());
  assert.deepEqual(
    { step: rec.step, pos: rec.pos, nTokens: rec.nTokens, layerStart: rec.layerStart, layerEnd: rec.layerEnd, profile: rec.profile },
    { step: 3, pos: 10, nTokens: 1, layerStart: 2, layerEnd: 5, profile: 'reference' },
  );
  assert.equal(rec.modelId, toModelId(modelId));
  assert.equal(rec.requestId, requestIdOf('sess-1.r1'));
  assert.equal(rec.sessionId, sessionIdOf('sess-1.r1/audit'));
  assert.equal(rec.upstreamReceiptHash, AUDITED);
  assert.equal(rec.inputHash, hashTensor(steps[3]!.input));
  assert.equal(rec.outputHash, hashTensor(r.outputBytes));
  assert.ok(rec.computeUs > 0);

  // auditing a middle step: the prefix up to it, the audited step last (f16 input)
  const mid = await requestReexecution(host!, DOMAIN, peer(honest!), request({ step: 2, steps: steps.slice(0, 3) }));
  assert.equal(mid.receipt.record.inputHash, hashTensor(steps[2]!.input));
  assert.equal(mid.receipt.record.pos, 9);
  console.log(`audit of a middle step: ${mid.ms.toFixed(1)} ms round trip`);
});

test('bad requests are refused with a clear reason, and the node keeps serving', { timeout: 30_000 }, async () => {
  const refused = async (req: ReexecRequest, re: RegExp) => {
    await assert.rejects(requestReexecution(host!, DOMAIN, peer(honest!), req), (e: unknown) => {
      assert.ok(e instanceof ReexecError, String(e));
      assert.equal(e.answered, true);
      assert.equal(e.receipt, undefined);
      assert.match(e.message, re);
      return true;
    });
  };
  await refused(request({ layers: [0, 2] }), /wrong layers: this node serves layers 2:5, the request is for 0:2/);
  await refused(request({ modelId: 'not-the-model' }), /wrong model/);
  const gap = steps.map((s, i) => (i === 2 ? { ...s, pos: s.pos + 1 } : s));
  await refused(request({ steps: gap }), /not contiguous: steps\[2\] is at position 10, expected 9/);
  const short = steps.map((s, i) => (i === 1 ? { ...s, input: s.input.subarray(4) } : s));
  await refused(request({ steps: short }), /steps\[1\] declares 252 bytes, 1 tokens × 64 × f32 is 256/);
  await refused(request({ steps: steps.slice(1) }), /must start at position 0/);
  // longer than the model's context (or 8192): refused before any compute
  const ctx = src!.config.contextLength;
  const long = [{ step: 0, pos: 0, nTokens: ctx + 1, dtype: 'f32' as const, input: new Uint8Array((ctx + 1) * DIM * 4) }];
  await refused(request({ step: 0, steps: long }), /too many tokens/);
  // the client rejects a request whose audited step is not the last before sending (a caller bug)
  await assert.rejects(
    requestReexecution(host!, DOMAIN, peer(honest!), request({ step: 2 })),
    (e: unknown) => !(e instanceof ReexecError) && /must be the last/.test(String(e)),
  );
  // still serving, with identical output
  const r = await requestReexecution(host!, DOMAIN, peer(honest!), request());
  assert.ok(maxAbs(r.output, expected) <= 1e-5);
});

test('an unreachable peer is reported as not answered', { timeout: 15_000 }, async () => {
  const ghost = peerIdFromPrivateKey(generateIdentity().libp2pKey).toString();
  const port = await freePort();
  await assert.rejects(
    requestReexecution(host!, DOMAIN, { peerId: ghost, addrs: [`/ip4/127.0.0.1/tcp/${port}/p2p/${ghost}`] }, request(), 3000),
    (e: unknown) => {
      assert.ok(e instanceof ReexecError);
      assert.equal(e.answered, false);
      return true;
    },
  );
});

test('a node with noise:0.05 lies when it audits (validly signed, wrong output)', { timeout: 30_000 }, async () => {
  const r = await requestReexecution(host!, DOMAIN, peer(liar!), request());
  const d = relL2(r.output, expected);
  console.log(`noise:0.05 auditor: relative L2 vs reference = ${d.toExponential(3)}`);
  assert.ok(d > 1e-3, `relative L2 ${d}`);
  assert.equal(r.receipt.record.signer.toLowerCase(), addressOfPeer(liar!.peerId).toLowerCase());
});

test('dishonest kinds act on audits too: forge is caught by the client, skip-layer echoes the input', { timeout: 30_000 }, async () => {
  // in-process executors on the local [2,5] reference stage: no extra processes needed
  for (const spec of ['forge', 'skip-layer']) {
    const side = await createHost({ identity: generateIdentity() });
    // wrapped as `odsi node --fault <spec>` wraps its stage and stamper
    const faults = createNodeFaults([spec], true)!;
    const domain = DOMAIN;
    const honestStamper = new NodeStamper({ host: side, domain, crypto: new CryptoPool({ worker: false }) });
    const stamper = faults.stamper(honestStamper, { identity: side.identity, domain });
    const exec = new AuditExecServer({
      host: side,
      stage: faults.stage(stages[2]!),
      modelId,
      exclusive: (fn) => fn(),
      sign: (fields) => stamper.signReexecution(fields),
      domain,
    });
    try {
      await exec.start();
      const p = requestReexecution(host!, DOMAIN, { peerId: side.peerId, addrs: side.addrs() }, request({ routeSessionId: `dk-${spec}` }));
      if (spec === 'forge') {
        await assert.rejects(
          p,
          (e: unknown) => e instanceof ReexecError && e.answered && e.receipt === undefined && /bad re-execution receipt/.test(e.message),
        );
      } else {
        const r = await p;
        assert.deepEqual(r.output, decodeTensor(steps[3]!.input, 'f32', DIM), 'skip-layer should answer with its input');
      }
      // answered once (forge: signed, then corrupted; skip-layer: its input)
      assert.equal(exec.stats.served, 1);
    } finally {
      await exec.stop();
      await side.stop();
    }
  }
});
