// Bad receipts on the token path, against a real `odsi node` process: this test plays the
// upstream hop (hop 0 of a two-hop route whose hop 1 is the node) and sends STEPs, each followed
// by a RECEIPTS message (act 1.3.0) whose chain is missing, forged, signed by someone else, of
// another session, replayed or for other bytes. The node forwards its RESULT at once, then must
// answer each bad chain with a custody ERROR naming this upstream peer and a clear reason — and
// no receipt of its own — and a correct chain with the chain plus its own receipt.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peerIdFromString } from '@libp2p/peer-id';
import { generateIdentity, type Identity } from '../../src/identity/identity.js';
import { openModel } from '../../src/model/load.js';
import { modelIdentity } from '../../src/model/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { Channel } from '../../src/p2p/channel.js';
import { ACT_PROTOCOL, MsgType, RESULT_PROTOCOL, encodeTensor, type Message, type StepHeader } from '../../src/protocol/messages.js';
import { decodeReceipts, encodeReceipts } from '../../src/protocol/receipt-codec.js';
import { OPEN_TTL_MS, signOpen, type OpenToSign } from '../../src/protocol/open-signature.js';
import { NodeProcess } from '../../src/node/process.js';
import { ZERO_HASH } from '../../src/accountability/records/eip712.js';
import { hashTensor, signReceipt, type SignedReceipt } from '../../src/accountability/records/receipts.js';
import { ReceiptSigner } from '../../src/accountability/records/signer.js';
import { deploymentDomain, requestIdOf, sessionIdOf, toModelId } from '../../src/accountability/records/wire.js';
import { STORIES_GGUF } from '../helpers/paths.js';

let dir = '';
let modelId = '';
let node: NodeProcess | undefined;
let host: OdsiHost | undefined;
let me: Identity;
const DIM = 64;
const inbox: Message[] = [];
let waiter: (() => void) | undefined;

before(
  async () => {
    dir = mkdtempSync(join(tmpdir(), 'odsi-custody-'));
    const src = openModel(STORIES_GGUF);
    modelId = modelIdentity(src).modelId;
    src.close();
    node = await NodeProcess.start({
      model: STORIES_GGUF,
      range: [2, 5],
      identityFile: join(dir, 'n.key'),
      modelId,
      announceIntervalMs: 600_000,
    });
    me = generateIdentity();
    host = await createHost({ identity: me });
    // the node is the last hop: it sends OPENED/RESULT back to us
    await host.libp2p.handle(RESULT_PROTOCOL, (stream, conn) => {
      new Channel(stream, conn.remotePeer.toString(), host!.peerId, { onMessage: push });
    });
  },
  { timeout: 60_000 },
);

after(async () => {
  await node?.kill('SIGTERM').catch(() => undefined);
  await host?.stop().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function push(m: Message): void {
  inbox.push(m);
  waiter?.();
}

async function next(ms = 10_000): Promise<Message> {
  const until = Date.now() + ms;
  while (!inbox.length) {
    if (Date.now() > until) throw new Error('no reply from the node');
    await new Promise<void>((r) => {
      waiter = r;
      setTimeout(r, 100);
    });
  }
  return inbox.shift()!;
}

/** what hop 0 (this test) signs for a one-token step of `session` whose output is `out` */
function hop0Fields(session: string, step: number, pos: number, out: Uint8Array) {
  return {
    requestId: requestIdOf(session),
    sessionId: sessionIdOf(session),
    step,
    pos,
    nTokens: 1,
    layerStart: 0,
    layerEnd: 2,
    modelId: toModelId(modelId),
    profile: 'reference',
    inputHash: ZERO_HASH,
    budgetUs: 0,
    outputHash: hashTensor(out),
    recvUs: 0,
    computeUs: 0,
    sendUs: 0,
    upstreamReceiptHash: ZERO_HASH,
  };
}

/** A session on the node as hop 1 of a two-hop route, this test being its gateway (it signs the OPEN) and its hop 0. */
async function openSession(sid: string): Promise<Channel> {
  const stream = await host!.libp2p.dialProtocol(peerIdFromString(node!.peerId), ACT_PROTOCOL, { signal: AbortSignal.timeout(10_000) });
  const ch = new Channel(stream, node!.peerId, host!.peerId, { onMessage: push });
  const issuedAt = Date.now();
  const open: OpenToSign = {
    sessionId: sid,
    modelId,
    route: [
      { peerId: host!.peerId, addrs: host!.addrs(), start: 0, end: 2 },
      { peerId: node!.peerId, addrs: node!.info.addrs, start: 2, end: 5 },
    ],
    reply: { peerId: host!.peerId, addrs: host!.addrs() },
    dtype: 'f32',
    hidden: DIM,
    maxTokens: 64,
    issuedAt,
    expiresAt: issuedAt + OPEN_TTL_MS,
  };
  await ch.send({ type: MsgType.OPEN, header: { ...open, hop: 1, signature: signOpen(me, open) } });
  assert.equal((await next()).type, MsgType.OPENED);
  return ch;
}

test('the node rejects missing, forged, foreign, cross-session, replayed and mismatched receipts', { timeout: 60_000 }, async () => {
  const domain = deploymentDomain(process.env);
  const sid = 'custody-test';
  await host!.dial(node!.peerId, node!.info.addrs);
  const ch = await openSession(sid);

  const signer = new ReceiptSigner(me, domain);
  const act = (seed: number) => Float32Array.from({ length: DIM }, (_, i) => Math.sin(seed * 31 + i) * 0.5);
  const fields = (step: number, out: Uint8Array, session = sid) => hop0Fields(session, step, step, out);
  let rid = 1;
  /** a STEP, then its RECEIPTS (a chain, raw bytes, or none); the node's RESULT, then what follows it */
  const send = async (step: number, payload: Uint8Array, receipts: SignedReceipt[] | Uint8Array | undefined, budgetMs?: number) => {
    const header: StepHeader = {
      sessionId: sid,
      requestId: rid++,
      step,
      pos: step,
      nTokens: 1,
      dtype: 'f32',
      shape: [1, DIM],
      timeline: [],
      ...(budgetMs !== undefined ? { budgetMs } : {}),
    };
    await ch.send({ type: MsgType.STEP, header, payload });
    if (receipts) {
      const bytes = receipts instanceof Uint8Array ? receipts : encodeReceipts(receipts);
      await ch.send({ type: MsgType.RECEIPTS, header: { sessionId: sid, requestId: header.requestId, step }, payload: bytes });
    }
    const result = await next();
    assert.equal(result.type, MsgType.RESULT, `the output goes on before its receipts: ${JSON.stringify(result.header)}`);
    return next();
  };
  const expectCustody = (m: Message, re: RegExp, code = 'custody') => {
    assert.equal(m.type, MsgType.ERROR, `expected an error, got ${MsgType[m.type]}`);
    const h = m.header as { code: string; reason: string; peerId: string };
    assert.equal(h.code, code);
    assert.equal(h.peerId, host!.peerId, 'the error must name the upstream peer');
    assert.match(h.reason, re);
  };

  // a correct chain is accepted and the node appends its own receipt
  const out0 = encodeTensor(act(0), 'f32');
  const r0 = signer.receipt(fields(0, out0));
  const ok = await send(0, out0, [r0]);
  assert.equal(ok.type, MsgType.RECEIPTS, JSON.stringify(ok.header));
  const chain = decodeReceipts(ok.payload!);
  assert.equal(chain.length, 2);
  assert.deepEqual(chain[0], r0, 'the upstream receipt travels on unchanged');
  assert.equal(chain[1]!.record.inputHash, r0.record.outputHash);

  const out1 = encodeTensor(act(1), 'f32');
  // no receipts by the step's deadline (twice the budget, at least 5 s): nothing signed, ERROR timeout
  expectCustody(await send(1, out1, undefined, 1_000), /no receipts from .* for step 1/, 'timeout');
  expectCustody(await send(1, out1, new Uint8Array([1, 2, 3])), /malformed.*no receipt chain/);
  const good1 = signer.receipt(fields(1, out1));
  const forged = { record: good1.record, signature: `0x${'11'.repeat(32)}${good1.signature.slice(66)}` as const };
  expectCustody(await send(1, out1, [forged]), /bad_signature/);
  const stranger = signReceipt(generateIdentity(), { ...fields(1, out1), prevReceiptHash: ZERO_HASH, commitmentHash: ZERO_HASH }, domain);
  expectCustody(await send(1, out1, [stranger]), /bad_signature.*upstream hop/);
  const other = new ReceiptSigner(me, domain).receipt(fields(1, out1, 'another-session'));
  expectCustody(await send(1, out1, [other]), /cross_session/);
  expectCustody(await send(1, encodeTensor(act(99), 'f32'), [good1]), /input_mismatch/);
  expectCustody(await send(1, out1, [r0]), /slot_mismatch/);
  // the good one goes through once; sent again it is a replay
  assert.equal((await send(1, out1, [good1])).type, MsgType.RECEIPTS);
  expectCustody(await send(1, out1, [good1]), /replay/);
  await ch.close();
});

// A step this hop refuses after taking it (here its deadline) still has an upstream receipt, the
// next link in that signer's chain: the hop checks it anyway, so the session's next step, whose
// receipt links to it, is accepted. Step 1 arrives while step 0's receipt work is still pending
// (its RECEIPTS are held back), so the refusal happens before any custody check of step 1.
test('a step refused at this hop keeps the upstream receipt chain: the next step is accepted', { timeout: 60_000 }, async () => {
  const domain = deploymentDomain(process.env);
  const sid = 'custody-gap';
  const ch = await openSession(sid);
  const signer = new ReceiptSigner(me, domain);
  // step 2 retries step 1's position (a retry is a new step)
  const steps = [0, 1, 2].map((step) => {
    const pos = Math.min(step, 1);
    const out = encodeTensor(
      Float32Array.from({ length: DIM }, (_, i) => Math.cos(step * 17 + i) * 0.5),
      'f32',
    );
    const receipt = signer.receipt(hop0Fields(sid, step, pos, out));
    return { step, pos, out, receipt };
  });
  const stepMsg = (step: number, budgetMs?: number): Message => ({
    type: MsgType.STEP,
    header: {
      sessionId: sid,
      requestId: step + 1,
      step,
      pos: steps[step]!.pos,
      nTokens: 1,
      dtype: 'f32',
      shape: [1, DIM],
      timeline: [],
      ...(budgetMs !== undefined ? { budgetMs } : {}),
    },
    payload: steps[step]!.out,
  });
  const receiptsMsg = (step: number): Message => ({
    type: MsgType.RECEIPTS,
    header: { sessionId: sid, requestId: step + 1, step },
    payload: encodeReceipts([steps[step]!.receipt]),
  });
  const expect = async (type: MsgType, what: string): Promise<Message> => {
    const m = await next();
    assert.equal(m.type, type, `${what}: got ${MsgType[m.type]} ${JSON.stringify(m.header)}`);
    return m;
  };
  // step 0 runs; its receipts are held back, so its receipt work stays pending
  await ch.send(stepMsg(0));
  await expect(MsgType.RESULT, 'step 0');
  // step 1 cannot make its budget: refused after the hop took it
  await ch.send(stepMsg(1, 0.001));
  const refused = await expect(MsgType.ERROR, 'step 1');
  assert.equal((refused.header as { code: string }).code, 'deadline');
  // the upstream's receipts of both steps arrive; step 0 is signed
  await ch.send(receiptsMsg(0));
  await ch.send(receiptsMsg(1));
  assert.equal(decodeReceipts((await expect(MsgType.RECEIPTS, 'step 0 signed')).payload!).length, 2);
  // step 2 (position 1 again): its upstream receipt links to step 1's: accepted, signed, no custody error
  await ch.send(stepMsg(2));
  await ch.send(receiptsMsg(2));
  await expect(MsgType.RESULT, 'step 2');
  const chain = decodeReceipts((await expect(MsgType.RECEIPTS, 'step 2 signed')).payload!);
  assert.deepEqual(chain[0], steps[2]!.receipt);
  assert.equal(chain[1]!.record.step, 2);
  await ch.close();
});
