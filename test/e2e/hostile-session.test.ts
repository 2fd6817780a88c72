// Hostile peers against session ownership (issue 10, items 1, 3, 4, 5, 8): real `odsi node`
// processes A [0,2) and B [2,5) on 127.0.0.1, a legitimate victim gateway (RouteClient + the
// production Gateway), and an attacker = a second libp2p host with its own key speaking the
// frame protocol directly. Each attack is refused with a clear error, the victim's session
// keeps its greedy output equal to the golden tokens, and no sequence of OPEN/STEP messages
// gets a node to sign two receipts that verifyEquivocationEvidence accepts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { KV_PROTOCOL, MsgType, type Message, type OpenHeader } from '../../src/protocol/messages.js';
import { decodeReceipts } from '../../src/protocol/receipt-codec.js';
import { SessionPeer, stepMessage, waitUntil, type OpenFields } from '../../src/conformance/session-peer.js';
import { DIAL_TIMEOUT_MS } from '../../src/node/server.js';
import { RouteClient } from '../../src/route/route-client.js';
import type { Hop, RouteStage } from '../../src/route/route-stage.js';
import { createStage } from '../../src/engine/create.js';
import { generate } from '../../src/engine/generate.js';
import type { Stage } from '../../src/engine/types.js';
import { openModel } from '../../src/model/load.js';
import type { WeightSource } from '../../src/model/types.js';
import { createTokenizer } from '../../src/tokenizer/index.js';
import { NodeProcess, freePort } from '../../src/node/process.js';
import { deploymentDomain } from '../../src/accountability/records/wire.js';
import { detectEquivocation, verifyEquivocationEvidence } from '../../src/accountability/checks/equivocation.js';
import type { SignedReceipt } from '../../src/accountability/records/receipts.js';
import type { Gateway } from '../../src/gateway/gateway.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { openGatewaySide, type GatewaySide } from '../helpers/gateway-side.js';
import { startedAll } from '../helpers/nodes.js';

const domain = deploymentDomain({});
let side: GatewaySide;
let src: WeightSource;
let a: NodeProcess; // layers [0,2)
let b: NodeProcess; // layers [2,5)
const procs: NodeProcess[] = [];
let victimHost: OdsiHost;
let victim: RouteClient;
let gateway: Gateway;
/** the attacker: the gateway of its own sessions, speaking the frame protocol directly */
let attacker: SessionPeer;
let embed: Stage;
let head: Stage;
let victimRoute: RouteStage;
let dim: number;
/** how long a wait for a node's answer may take */
const WAIT_MS = 10_000;

const hopOf = (n: NodeProcess): Hop => ({ peerId: n.peerId, addrs: n.info.addrs, start: n.info.start, end: n.info.end });

before(
  async () => {
    side = openGatewaySide('odsi-hostile-');
    src = openModel(STORIES_GGUF);
    dim = src.config.dim;
    const start = (range: [number, number], i: number) =>
      NodeProcess.start({ model: STORIES_GGUF, range, identityFile: join(side.dir, `n${i}.key`), modelId: side.modelId, announceIntervalMs: 600_000 });
    [a, b] = await startedAll([start([0, 2], 0), start([2, 5], 1)], procs);
    victimHost = await createHost({ identity: generateIdentity() });
    victim = await RouteClient.start(victimHost);
    attacker = await SessionPeer.start(generateIdentity(), WAIT_MS);
    embed = await createStage('reference', src, { start: 0, end: 0, embed: true, head: false });
    head = await createStage('reference', src, { start: src.config.nLayers, end: src.config.nLayers, embed: false, head: true });
    gateway = await side.gateway([a, b].map((n) => n.candidate(n.info.end - n.info.start)));
  },
  { timeout: 120_000 },
);

after(async () => {
  await victimRoute?.dispose().catch(() => undefined);
  await victim?.stop();
  await victimHost?.stop();
  await attacker?.stop();
  await embed?.dispose();
  await head?.dispose();
  await Promise.all(procs.map((n) => n.stop().catch(() => undefined)));
  await side?.close();
  src?.close();
});

/** Greedy generation of golden case 0 through `route` (session `sid`) equals the golden tokens. */
async function assertGolden(route: RouteStage, sid: string): Promise<void> {
  const g = loadGolden()[0]!;
  const tok = createTokenizer(src.tokenizer!);
  const noStop = { stopIds: [] as number[], createStreamDecoder: () => tok.createStreamDecoder() };
  const r = await generate([embed, route, head], noStop, g.prompt_tokens, { maxTokens: g.generated_tokens.length, sampling: { temperature: 0 }, sessionId: sid, keepSession: true });
  assert.deepEqual(r.tokens, g.generated_tokens);
}

/** An OPEN for hop 0 of the attacker's own session over A → B (fields override). */
const open = (fields: Partial<OpenFields> & { sessionId: string }): OpenHeader =>
  attacker.open({ modelId: side.modelId, route: [hopOf(a), hopOf(b)], hidden: dim, ...fields });

const step = (sessionId: string, stepNo: number, seed: number, requestId = stepNo + 1): Message => stepMessage({ sessionId, step: stepNo, seed, requestId, dim });
const until = (what: string, cond: () => boolean, ms = WAIT_MS) => waitUntil(what, cond, ms);
const opened = (sid: string, n = 1) => attacker.results(sid).filter((m) => m.type === MsgType.OPENED).length >= n;
const resultsOf = (sid: string, n: number) => attacker.results(sid).filter((m) => m.type === MsgType.RESULT).length >= n;

const errorsIn = (got: Message[]) => got.filter((m) => m.type === MsgType.ERROR).map((m) => m.header as { code: string; reason: string });

test('the victim gateway generates the golden tokens', { timeout: 60_000 }, async () => {
  victimRoute = await victim.open({ modelId: side.modelId, config: src.config, hops: [hopOf(a), hopOf(b)], sessionId: 'victim-1' });
  await assertGolden(victimRoute, 'victim-1');
});

test('unsigned, forged and misdirected OPENs are refused as forbidden', { timeout: 30_000 }, async () => {
  const unsigned = open({ sessionId: 'atk-unsigned' });
  delete unsigned.signature;
  const forged = { ...open({ sessionId: 'atk-forged' }), reply: { peerId: victimHost.peerId, addrs: victimHost.addrs() } };
  for (const h of [unsigned, forged]) {
    const { ch, got } = await attacker.stream(hopOf(a));
    await ch.send({ type: MsgType.OPEN, header: h });
    await until('a refusal', () => got.length > 0);
    assert.equal(errorsIn(got)[0]?.code, 'forbidden', JSON.stringify(got[0]?.header));
    // unsigned: no signature; forged (names another gateway): refused before its signature is even checked
    assert.match(errorsIn(got)[0]!.reason, /OPEN is not signed|must come from its gateway/);
    await ch.close();
  }
  // hop 1 accepts an OPEN only from route[0]
  const { ch, got } = await attacker.stream(hopOf(b));
  await ch.send({ type: MsgType.OPEN, header: { ...open({ sessionId: 'atk-hop1' }), hop: 1 } });
  await until('a refusal', () => got.length > 0);
  assert.equal(errorsIn(got)[0]?.code, 'forbidden');
  assert.match(errorsIn(got)[0]!.reason, /must come from route\[0\]/);
  await ch.close();
});

test("resumeFrom another gateway's session, and re-OPEN of its id, are refused; the victim continues", { timeout: 60_000 }, async () => {
  const { ch, got } = await attacker.stream(hopOf(a));
  await ch.send({ type: MsgType.OPEN, header: open({ sessionId: 'atk-resume', resumeFrom: 'victim-1' }) });
  await until('a refusal', () => got.length > 0);
  assert.equal(errorsIn(got)[0]?.code, 'forbidden');
  assert.match(errorsIn(got)[0]!.reason, /cannot resume from session "victim-1": no session of yours/);
  await ch.close();
  // an unknown session reads the same (nothing tells a stranger which ids exist)
  const u = await attacker.stream(hopOf(a));
  await u.ch.send({ type: MsgType.OPEN, header: open({ sessionId: 'atk-resume-2', resumeFrom: 'no-such-session' }) });
  await until('a refusal', () => u.got.length > 0);
  assert.match(errorsIn(u.got)[0]!.reason, /cannot resume from session "no-such-session": no session of yours/);
  await u.ch.close();
  // re-OPEN of the victim's id (signed by the attacker for itself)
  const r = await attacker.stream(hopOf(a));
  await r.ch.send({ type: MsgType.OPEN, header: open({ sessionId: 'victim-1' }) });
  await until('a refusal', () => r.got.length > 0);
  assert.equal(errorsIn(r.got)[0]?.code, 'bad_message');
  assert.match(errorsIn(r.got)[0]!.reason, /session id in use/);
  await r.ch.close();
  await assertGolden(victimRoute, 'victim-1');
});

test('a second OPEN on a stream is refused; the first session lives exactly as long as its stream', { timeout: 30_000 }, async () => {
  const { ch, got } = await attacker.stream(hopOf(a));
  await ch.send({ type: MsgType.OPEN, header: open({ sessionId: 'atk-two-1' }) });
  await ch.send({ type: MsgType.OPEN, header: open({ sessionId: 'atk-two-2' }) }); // races the first
  await until('a refusal', () => got.length > 0);
  assert.equal(errorsIn(got)[0]?.code, 'bad_message');
  assert.match(errorsIn(got)[0]!.reason, /already carries a session/);
  await until('OPENED of the first session', () => opened('atk-two-1'));
  assert.ok(!opened('atk-two-2'));
  await ch.close();
  // the whole chain is torn down at once: the last hop closes its result stream
  await until('the result stream of the first session to close', () => attacker.resultClosed('atk-two-1'), 5000);
});

test('no sequence of OPEN/STEP messages makes a node sign two conflicting receipts for one slot', { timeout: 60_000 }, async () => {
  const sid = 'frame';
  const receipts: SignedReceipt[] = [];
  // act 1.3: each RESULT is followed by a RECEIPTS message carrying the chain (binary payload)
  // (a wait for RECEIPTS is a wait for a node's answer like any other: two signatures and a
  // verification on worker threads in two processes, as slow as a loaded box makes them)
  const receiptsIn = () => attacker.results(sid).filter((m) => m.type === MsgType.RECEIPTS);
  const s1 = await attacker.stream(hopOf(a));
  await s1.ch.send({ type: MsgType.OPEN, header: open({ sessionId: sid }) });
  await until('OPENED', () => opened(sid));
  await s1.ch.send(step(sid, 0, 1));
  await until('RESULT of step 0', () => resultsOf(sid, 1));
  // STEP 0 again, another input: refused, nothing computed
  await s1.ch.send(step(sid, 0, 2, 7));
  await until('a refusal', () => errorsIn(s1.got).length > 0);
  assert.equal(errorsIn(s1.got)[0]!.code, 'bad_message');
  assert.match(errorsIn(s1.got)[0]!.reason, /already signed for a different input/);
  // the same input again (a retransmission) is fine: it gets the same receipt
  await s1.ch.send(step(sid, 0, 1, 8));
  await until('RESULT of the retransmission', () => resultsOf(sid, 2));
  // close (once the receipts that follow both RESULTs are in: a CLOSE ends the session before
  // receipts not yet sent), re-open the same id, and try step 0 with another input again
  await until('the RECEIPTS after both RESULTs of step 0', () => receiptsIn().length >= 2);
  await s1.ch.send({ type: MsgType.CLOSE, header: { sessionId: sid } });
  await until('the session to close', () => attacker.resultClosed(sid), 5000);
  const s2 = await attacker.stream(hopOf(a));
  await s2.ch.send({ type: MsgType.OPEN, header: open({ sessionId: sid }) });
  await until('OPENED again', () => opened(sid, 2));
  await s2.ch.send(step(sid, 0, 3));
  await until('a refusal after re-open', () => errorsIn(s2.got).length > 0);
  assert.match(errorsIn(s2.got)[0]!.reason, /already signed for a different input/);
  // a new step number is a new slot: signed (its RECEIPTS follow), or refused by the next hop's
  // custody check (the re-opened chain does not link to the receipts it already saw) — either
  // way signed once. B's RESULT goes out before its custody check either way, so the RESULT
  // decides nothing: wait for what does, B's RECEIPTS or the refusal, whichever comes
  await s2.ch.send(step(sid, 1, 4));
  const refused = () => errorsIn(s2.got).slice(1);
  await until('step 1 signed or refused', () => receiptsIn().length >= 3 || refused().length > 0);
  if (receiptsIn().length < 3) assert.match(refused()[0]!.code, /custody/, JSON.stringify(refused()));
  await s2.ch.close();
  for (const m of receiptsIn()) receipts.push(...(decodeReceipts((m as { payload: Uint8Array }).payload) as unknown as SignedReceipt[]));
  assert.ok(receipts.length >= 4, `receipts: ${receipts.length}`);
  for (const x of receipts)
    for (const y of receipts) {
      const ev = detectEquivocation(x, y, domain);
      assert.ok(ev === null || !verifyEquivocationEvidence(ev, domain), 'a node signed two receipts for one slot');
    }
});

test('KV hand-over only by invitation, reserved against the budget before any bytes', { timeout: 30_000 }, async () => {
  const kvDim = src.config.nKvHeads * src.config.headDim;
  const kv = (open?: OpenHeader, length = 4) => ({
    type: MsgType.KV,
    header: { sessionId: 'atk-kv', modelId: side.modelId, start: 2, end: 5, length, layer: 2, kvDim, ...(open ? { open } : {}) },
    payload: new Uint8Array(2 * length * kvDim * 4),
  }) as Message;
  // uninvited: no owner's OPEN
  const u = await attacker.stream(hopOf(b), KV_PROTOCOL);
  await u.ch.send(kv());
  await until('a refusal', () => u.got.length > 0);
  assert.equal(errorsIn(u.got)[0]?.code, 'forbidden');
  // invited by its own (attacker-signed) OPEN, but far beyond the context length: refused before anything is reserved
  const invite = open({ sessionId: 'atk-kv', route: [hopOf(a), { peerId: attacker.peerId, addrs: attacker.host.addrs(), start: 2, end: 5 }], spares: [hopOf(b)] });
  const big = await attacker.stream(hopOf(b), KV_PROTOCOL);
  const huge = 50_000_000;
  await big.ch.send({ ...kv(invite, 1), header: { ...kv(invite, 1).header, length: huge } } as Message);
  await until('a refusal', () => big.got.length > 0);
  assert.equal(errorsIn(big.got)[0]?.code, 'bad_message');
  assert.match(errorsIn(big.got)[0]!.reason, /the context length/);
  // the node still takes real sessions
  const r = await victim.open({ modelId: side.modelId, config: src.config, hops: [hopOf(a), hopOf(b)], sessionId: 'victim-2' });
  await assertGolden(r, 'victim-2');
  await r.dispose();
});

test('an invited KV import is resumed only by the owner that invited it', { timeout: 30_000 }, async () => {
  const kvDim = src.config.nKvHeads * src.config.headDim;
  const sid = 'atk-kv-own';
  const length = 4;
  const invite = open({ sessionId: sid, route: [hopOf(a), { peerId: attacker.peerId, addrs: attacker.host.addrs(), start: 2, end: 5 }], spares: [hopOf(b)] });
  const { ch, got } = await attacker.stream(hopOf(b), KV_PROTOCOL);
  for (let layer = 2; layer < 5; layer++) {
    const header = { sessionId: sid, modelId: side.modelId, start: 2, end: 5, length, layer, kvDim, ...(layer === 2 ? { open: invite } : {}) };
    await ch.send({ type: MsgType.KV, header, payload: new Uint8Array(2 * length * kvDim * 4) } as Message);
  }
  await until('KV_ACK', () => got.length > 0);
  assert.equal(got[0]!.type, MsgType.KV_ACK, JSON.stringify(got[0]!.header));
  await ch.close();
  // the victim gateway may not resume the attacker's import …
  await assert.rejects(
    victim.open({ modelId: side.modelId, config: src.config, hops: [hopOf(b)], sessionId: 'victim-steal', resumeFrom: sid }),
    (e: unknown) => {
      assert.equal((e as { remoteCode?: string }).remoteCode, 'forbidden');
      assert.match((e as Error).message, /no session of yours/);
      return true;
    },
  );
  // … nor open a session under its id (it would compute on the imported cache)
  await assert.rejects(
    victim.open({ modelId: side.modelId, config: src.config, hops: [hopOf(b)], sessionId: sid }),
    /session id in use/,
  );
  // … its owner may
  const r = await attacker.stream(hopOf(b));
  await r.ch.send({ type: MsgType.OPEN, header: open({ sessionId: `${sid}.t1`, route: [hopOf(b)], resumeFrom: sid }) });
  await until('OPENED of the resumed session', () => opened(`${sid}.t1`));
  assert.equal(errorsIn(r.got).length, 0);
  await r.ch.close();
});

test('a signed OPEN is spent once: presented again after its session closed, it is refused', { timeout: 30_000 }, async () => {
  const header = open({ sessionId: 'atk-replay' });
  const first = await attacker.stream(hopOf(a));
  await first.ch.send({ type: MsgType.OPEN, header });
  await until('OPENED of the first use', () => opened('atk-replay'));
  await first.ch.close();
  await until('the session to close', () => attacker.resultClosed('atk-replay'), 5000);
  const again = await attacker.stream(hopOf(a));
  await again.ch.send({ type: MsgType.OPEN, header });
  await until('a refusal', () => again.got.length > 0);
  assert.equal(errorsIn(again.got)[0]?.code, 'bad_message');
  assert.match(errorsIn(again.got)[0]!.reason, /used already/);
  await again.ch.close();
});

test('an OPEN naming an arbitrary local port gets only "unreachable", open port or closed', { timeout: 60_000 }, async () => {
  const server: Server = createServer((s) => s.destroy());
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const openPort = (server.address() as { port: number }).port;
  const closedPort = await freePort();
  const reasons: string[] = [];
  const ms: number[] = [];
  for (const port of [openPort, closedPort]) {
    const fake = generateIdentity().peerId.toString();
    const { ch, got } = await attacker.stream(hopOf(a));
    const t0 = performance.now();
    await ch.send({
      type: MsgType.OPEN,
      header: open({ sessionId: `atk-port-${port}`, route: [hopOf(a), { peerId: fake, addrs: [`/ip4/127.0.0.1/tcp/${port}`], start: 2, end: 5 }] }),
    });
    await until('a refusal', () => got.length > 0, 15_000);
    ms.push(performance.now() - t0);
    const e = errorsIn(got)[0]!;
    assert.equal(e.code, 'unreachable');
    reasons.push(e.reason.replace(fake, 'X'));
    await ch.close();
  }
  server.close();
  assert.equal(reasons[0], reasons[1]);
  assert.equal(reasons[0], `hop ${a.peerId} cannot reach X`);
  // nor when: both answers come DIAL_TIMEOUT_MS after the dial (a closed port fails in a millisecond)
  for (const t of ms) assert.ok(t >= DIAL_TIMEOUT_MS - 50 && t < DIAL_TIMEOUT_MS + 1500, `answered after ${t.toFixed(0)} ms`);
});

test('an ERROR frame is never answered with an ERROR', { timeout: 30_000 }, async () => {
  const { ch, got } = await attacker.stream(hopOf(a));
  await ch.send({ type: MsgType.ERROR, header: { code: 'internal', reason: 'provoke', peerId: attacker.peerId, sessionId: 'nope' } });
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(got.length, 0);
  await ch.send({ type: MsgType.CLOSE, header: { sessionId: 'nope' } });
  await until('the reply to CLOSE', () => got.length > 0);
  assert.equal(errorsIn(got)[0]?.code, 'unknown_session');
  await ch.close();
});

test('after all attacks: the victim session and a production Gateway run still give the golden tokens', { timeout: 60_000 }, async () => {
  await assertGolden(victimRoute, 'victim-1');
  const g = loadGolden()[0]!;
  const out = await gateway.run({ promptIds: g.prompt_tokens, maxTokens: g.generated_tokens.length, sampling: { temperature: 0 } });
  assert.deepEqual(out.tokens, g.generated_tokens);
});
