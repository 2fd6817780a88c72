// The receipt-lag bound (MAX_RECEIPT_LAG, src/node/executor.ts) against a real `odsi node`
// process: the node serves hop 1 of a two-hop route whose hop 0 and gateway is this test (a
// SessionPeer: it signs the OPEN, sends the STEPs and the upstream RECEIPTS, and receives the
// node's RESULTs and RECEIPTS, the node being the last hop). Outputs go on before their
// receipts, so steps 0..3 are answered with no upstream RECEIPTS at all; step 4 finds four
// steps' receipt work pending and must wait until the oldest (step 0) is done: no output for it
// while no RECEIPTS came, its output right after the node's own RECEIPTS for step 0 once the
// upstream's arrive. A step whose upstream RECEIPTS never come ends in ERROR `timeout` naming
// the upstream peer, by its own due time (arrival + the receipts' wait).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateIdentity } from '../../src/identity/identity.js';
import { openModel } from '../../src/model/load.js';
import { modelIdentity } from '../../src/model/identity.js';
import { MsgType, type ErrorHeader, type Message, type StepHeader } from '../../src/protocol/messages.js';
import { decodeReceipts, encodeReceipts } from '../../src/protocol/receipt-codec.js';
import { NodeProcess } from '../../src/node/process.js';
import { MAX_RECEIPT_LAG, MIN_RECEIPTS_WAIT_MS } from '../../src/node/executor.js';
import { SessionPeer, pause, stepMessage, waitUntil } from '../../src/conformance/session-peer.js';
import { ZERO_HASH } from '../../src/accountability/records/eip712.js';
import { hashTensor } from '../../src/accountability/records/receipts.js';
import { ReceiptSigner } from '../../src/accountability/records/signer.js';
import { deploymentDomain, requestIdOf, sessionIdOf, toModelId } from '../../src/accountability/records/wire.js';
import { STORIES_GGUF } from '../helpers/paths.js';

/** how long any single answer of the node may take */
const WAIT_MS = 10_000;
/** how long the test watches for an output that must not come */
const QUIET_MS = 1_500;

let dir = '';
let modelId = '';
let dim = 0;
let node: NodeProcess | undefined;
let peer: SessionPeer | undefined;

before(
  async () => {
    dir = mkdtempSync(join(tmpdir(), 'odsi-lag-'));
    const src = openModel(STORIES_GGUF);
    modelId = modelIdentity(src).modelId;
    dim = src.config.dim;
    src.close();
    [node, peer] = await Promise.all([
      NodeProcess.start({ model: STORIES_GGUF, range: [2, 5], identityFile: join(dir, 'n.key'), modelId, announceIntervalMs: 600_000 }),
      SessionPeer.start(generateIdentity(), WAIT_MS),
    ]);
  },
  { timeout: 60_000 },
);

after(async () => {
  await peer?.stop().catch(() => undefined);
  await node?.kill('SIGTERM').catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('a hop runs at most MAX_RECEIPT_LAG steps ahead of its upstream RECEIPTS', { timeout: 30_000 }, async () => {
  assert.equal(MAX_RECEIPT_LAG, 4, 'this test plays the bound of 4 steps');
  const [n, me] = [node!, peer!];
  const sid = 'receipt-lag';
  const { ch, got } = await me.stream({ peerId: n.peerId, addrs: n.info.addrs });
  // this test is the session's gateway (it signs the OPEN, results come back to it) and its hop 0
  const open = me.open({
    sessionId: sid,
    modelId,
    hidden: dim,
    route: [
      { peerId: me.peerId, addrs: me.host.addrs(), start: 0, end: 2 },
      { peerId: n.peerId, addrs: n.info.addrs, start: 2, end: 5 },
    ],
    hop: 1,
  });
  await ch.send({ type: MsgType.OPEN, header: open });
  await me.result(sid, 'OPENED', (m) => m.type === MsgType.OPENED);

  const results = () => me.results(sid);
  const indexOf = (type: MsgType, step: number) => results().findIndex((m) => m.type === type && (m.header as StepHeader).step === step);
  const has = (type: MsgType, step: number) => indexOf(type, step) >= 0;
  const steps = new Map<number, Message>();
  const sendStep = async (step: number, budgetMs?: number) => {
    const m = stepMessage({ sessionId: sid, step, dim, pos: step });
    if (budgetMs !== undefined) (m.header as StepHeader).budgetMs = budgetMs;
    steps.set(step, m);
    await ch.send(m);
  };

  // 1. steps 0..3: each output goes on at once, with no upstream RECEIPTS for any of them. Step 0
  // has no budget (its receipts may take RECEIPTS_WAIT_MS = 30 s: the quiet watch below cannot
  // make it time out); steps 1..3 have one, so their receipts are waited for MIN_RECEIPTS_WAIT_MS.
  for (let step = 0; step < MAX_RECEIPT_LAG; step++) {
    await sendStep(step, step === 0 ? undefined : 2_000);
    await waitUntil(`RESULT of step ${step} before any RECEIPTS`, () => has(MsgType.RESULT, step), WAIT_MS);
  }

  // 2. step 4 finds four steps' receipt work pending: it is not computed while no RECEIPTS came
  // (no budget: the time it is held must not count against a deadline of its own)
  await sendStep(MAX_RECEIPT_LAG);
  await pause(QUIET_MS);
  assert.ok(!has(MsgType.RESULT, MAX_RECEIPT_LAG), `no output of step ${MAX_RECEIPT_LAG} while steps 0..3 await their receipts`);
  assert.ok(!results().some((m) => m.type === MsgType.RECEIPTS), 'nothing signed without the upstream RECEIPTS');
  assert.ok(!got.some((m) => m.type === MsgType.ERROR), `no error upstream yet: ${JSON.stringify(got.map((m) => m.header))}`);

  // 3. the upstream RECEIPTS of step 0, as the honest hop 0 signs them (output = the STEP's bytes)
  const signer = new ReceiptSigner(me.identity, deploymentDomain(process.env));
  const r0 = signer.receipt({
    requestId: requestIdOf(sid),
    sessionId: sessionIdOf(sid),
    step: 0,
    pos: 0,
    nTokens: 1,
    layerStart: 0,
    layerEnd: 2,
    modelId: toModelId(modelId),
    profile: 'reference',
    inputHash: ZERO_HASH,
    budgetUs: 0,
    outputHash: hashTensor(steps.get(0)!.payload!),
    recvUs: 0,
    computeUs: 0,
    sendUs: 0,
    upstreamReceiptHash: ZERO_HASH,
  });
  const h0 = steps.get(0)!.header as StepHeader;
  await ch.send({ type: MsgType.RECEIPTS, header: { sessionId: sid, requestId: h0.requestId, step: 0 }, payload: encodeReceipts([r0]) });
  await waitUntil(`RESULT of step ${MAX_RECEIPT_LAG} once step 0's receipts are out`, () => has(MsgType.RESULT, MAX_RECEIPT_LAG), WAIT_MS);
  // step 4 waited for step 0's receipt work only, not for steps 1..3 (whose receipts never come)
  assert.ok(!got.some((m) => m.type === MsgType.ERROR), `step ${MAX_RECEIPT_LAG} ran before any receipt wait timed out`);
  const mine = results()[indexOf(MsgType.RECEIPTS, 0)];
  assert.ok(mine, "the node's RECEIPTS for step 0 went on");
  assert.ok(indexOf(MsgType.RECEIPTS, 0) < indexOf(MsgType.RESULT, MAX_RECEIPT_LAG), "step 4's output follows step 0's receipts");
  const chain = decodeReceipts(mine.payload!);
  assert.equal(chain.length, 2);
  assert.deepEqual(chain[0], r0, 'the upstream receipt travels on unchanged');
  assert.equal(chain[1]!.record.step, 0);
  assert.equal(chain[1]!.record.inputHash, r0.record.outputHash);

  // 4. the receipts of steps 1..3 never come: ERROR timeout naming the upstream peer, each
  // MIN_RECEIPTS_WAIT_MS after its step arrived (not one wait after another: steps 2 and 3, whose
  // receipts were due about when step 1's were, time out right after it); nothing signed for them
  const err = await waitForError(got, 1, MIN_RECEIPTS_WAIT_MS + WAIT_MS);
  assert.equal(err.code, 'timeout');
  assert.equal(err.peerId, me.peerId, 'the error names the upstream peer');
  assert.match(err.reason, new RegExp(`no receipts from ${me.peerId} for step 1 within ${MIN_RECEIPTS_WAIT_MS} ms`));
  for (const step of [2, 3]) {
    const e = await waitForError(got, step, MIN_RECEIPTS_WAIT_MS / 2);
    assert.equal(e.code, 'timeout', `step ${step}`);
  }
  for (const step of [1, 2, 3]) assert.equal(indexOf(MsgType.RECEIPTS, step), -1, `no receipt for step ${step}`);
  await ch.close();
});

/** the ERROR upstream about `step` (its reason names it), within ms */
async function waitForError(got: Message[], step: number, ms: number): Promise<ErrorHeader> {
  const find = () => got.find((m) => m.type === MsgType.ERROR && (m.header as ErrorHeader).reason.includes(`step ${step} `));
  await waitUntil(`ERROR for step ${step}`, () => find() !== undefined, ms);
  return find()!.header as ErrorHeader;
}
