// The binary STEP/RESULT/RECEIPTS header codec (src/protocol/step-header.ts, docs/protocol.md §4
// "Binary headers"): round trips, every refusal with the ids it can echo, what a sender cannot
// encode, and bounded random round trips through the message decoder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_ROUTE_HOPS, MessageDecoder, MessageError, MsgType, encodeMessage, parseHeader, type StepHeader } from '../../src/protocol/messages.js';
import { MAX_TIMELINE, decodeReceiptsHeader, decodeStepHeader, encodeReceiptsHeader, encodeStepHeader } from '../../src/protocol/step-header.js';
import { buildVectors } from '../../src/conformance/vectors.js';

const timing = (peerId: string, i: number) => ({
  peerId,
  start: i * 10,
  end: i * 10 + 10,
  queueMs: 0.013,
  computeMs: 1.25,
  sendMs: 0.004,
  budgetInMs: 250 - i,
  slackMs: -0.5,
});
const base: StepHeader = { sessionId: 'sess-1.r2', requestId: 12, step: 3, pos: 40, nTokens: 1, dtype: 'f16', shape: [1, 576], timeline: [] };

test('round trips: optional members, three hops, unicode ids, extension members, RECEIPTS', () => {
  const cases: StepHeader[] = [
    base,
    { ...base, budgetMs: -3.25 },
    { ...base, replay: false },
    { ...base, replay: true, budgetMs: 0 },
    { ...base, timeline: [timing('16Uiu2HAkzdQ5Y9SYT91K1ue5SxXwgmajXntfScGnLYeip5hHyWmT', 0), timing('hop-ü-😀', 1), timing('h'.repeat(256), 2)] },
    { ...base, sessionId: '😀'.repeat(128), requestId: Number.MAX_SAFE_INTEGER, step: Number.MAX_SAFE_INTEGER, pos: 0xffff_ffff, nTokens: 0xffff_ffff },
    { ...base, trace: { id: 'abc', hops: [1, 2] }, note: 'kept' },
  ];
  for (const h of cases) {
    for (const type of [MsgType.STEP, MsgType.RESULT]) assert.deepEqual(decodeStepHeader(encodeStepHeader(h, type), type), h);
  }
  // an absent optional member stays absent, an undefined one is not sent
  assert.ok(!('budgetMs' in decodeStepHeader(encodeStepHeader({ ...base, budgetMs: undefined }))));
  assert.equal(encodeStepHeader({ ...base, extra: undefined }).length, encodeStepHeader(base).length);
  // no extension: 41 bytes for a 9-byte session id and no timeline
  assert.equal(encodeStepHeader(base).length, 1 + 2 + 9 + 8 + 8 + 4 + 4 + 1 + 8 + 1 + 2);
  assert.equal(MAX_TIMELINE, MAX_ROUTE_HOPS, 'a header carries one timeline entry per hop of the longest route');
  const r = { sessionId: 'chain-1', requestId: 2, step: 1 };
  assert.deepEqual(decodeReceiptsHeader(encodeReceiptsHeader(r)), r);
  assert.deepEqual(decodeReceiptsHeader(encodeReceiptsHeader({ ...r, why: 'ext' })), { ...r, why: 'ext' });
});

test('every refusal vector is a bad_message echoing the ids it could read', () => {
  const { invalid } = buildVectors().binaryHeaders;
  for (const v of invalid) {
    const bytes = Buffer.from(v.headerHex, 'hex');
    assert.throws(
      () => parseHeader(v.type, bytes),
      (e: unknown) => {
        assert.ok(e instanceof MessageError && e.code === 'bad_message' && e.msgType === v.type, v.name);
        // ids are echoed once read: the session id cases have none, every other case both
        if (/sessionId/.test(v.name)) assert.equal(e.sessionId, undefined, v.name);
        else if (/requestId/.test(v.name)) assert.ok(e.sessionId === 's1' && e.requestId === undefined, v.name);
        else assert.ok(e.sessionId !== undefined && e.requestId !== undefined, v.name);
        return true;
      },
      v.name,
    );
  }
  // the decoder carries on after a refused header
  const d = new MessageDecoder();
  const good = encodeMessage({ type: MsgType.STEP, header: base, payload: new Uint8Array(0) })[0]!;
  const bad = Uint8Array.from(good);
  bad[16 + 36] = 7; // the dtype byte (at 29 after a 2-byte session id, here 9 bytes)
  assert.throws(() => d.push(bad), (e: unknown) => e instanceof MessageError && e.sessionId === 'sess-1.r2' && e.requestId === 12 && /dtype/.test(e.message));
  assert.equal(d.push(good).length, 1);
});

test('a sender cannot encode what a receiver must refuse', () => {
  const refuses = (h: Partial<StepHeader> & Record<string, unknown>, field: RegExp) =>
    assert.throws(() => encodeStepHeader({ ...base, ...h } as StepHeader), (e: unknown) => e instanceof MessageError && field.test(e.message), String(field));
  refuses({ sessionId: '' }, /sessionId/);
  refuses({ sessionId: 'x'.repeat(257) }, /sessionId/);
  refuses({ requestId: -1 }, /requestId/);
  refuses({ requestId: 2 ** 53 }, /requestId/);
  refuses({ step: 1.5 }, /step/);
  refuses({ pos: 2 ** 32 }, /pos/);
  refuses({ nTokens: 0 }, /nTokens/);
  refuses({ dtype: 'f64' as 'f32' }, /dtype/);
  refuses({ dtype: 'toString' as 'f32' }, /dtype/);
  refuses({ shape: [1] }, /shape/);
  refuses({ shape: [1, -1] }, /shape\.1/);
  refuses({ budgetMs: NaN }, /budgetMs/);
  refuses({ budgetMs: Infinity }, /budgetMs/);
  refuses({ replay: 1 as unknown as boolean }, /replay/);
  refuses({ timeline: Array(33).fill(timing('p', 0)) }, /timeline/);
  refuses({ timeline: [{ ...timing('p', 0), queueMs: -1 }] }, /timeline\.0\.queueMs/);
  refuses({ timeline: [{ ...timing('p', 0), slackMs: NaN }] }, /timeline\.0\.slackMs/);
  refuses({ timeline: [{ ...timing('', 0) }] }, /timeline\.0\.peerId/);
  refuses({ big: 'x'.repeat(70_000) }, /extension/);
  assert.throws(() => encodeReceiptsHeader({ sessionId: 's', requestId: 1, step: -1 }), /step/);
});

test('random headers round trip through the message decoder; random mutations never crash it (bounded: 1 s)', () => {
  let seed = 0x9e3779b9;
  const rnd = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  const int = (n: number) => Math.floor(rnd() * n);
  const chars = Array.from('aZ09.-_üж😀');
  const str = (n: number) => Array.from({ length: n }, () => chars[int(chars.length)]).join('');
  const ms = () => Math.round(rnd() * 1e6) / 1e3;
  const until = performance.now() + 1000;
  let n = 0;
  for (; n < 1000 && performance.now() < until; n++) {
    const h: StepHeader = {
      sessionId: str(1 + int(40)),
      requestId: int(2 ** 31) * int(2 ** 22),
      step: int(1e6),
      pos: int(2 ** 32),
      nTokens: 1 + int(4096),
      dtype: (['f32', 'f16', 'bf16'] as const)[int(3)]!,
      shape: [1 + int(64), int(8192)],
      timeline: Array.from({ length: int(MAX_TIMELINE + 1) }, () => ({
        peerId: str(1 + int(60)),
        start: int(100),
        end: int(100),
        queueMs: ms(),
        computeMs: ms(),
        sendMs: ms(),
        budgetInMs: ms() - 500,
        slackMs: ms() - 500,
      })),
    };
    if (rnd() < 0.5) h.budgetMs = ms() - 100;
    if (rnd() < 0.3) h.replay = rnd() < 0.5;
    if (rnd() < 0.1) h.ext = { v: int(10) };
    const type = rnd() < 0.5 ? MsgType.STEP : MsgType.RESULT;
    const frames = encodeMessage({ type, header: h, payload: new Uint8Array(int(3)) });
    const d = new MessageDecoder();
    const got = frames.flatMap((f) => d.push(f));
    assert.equal(got.length, 1);
    assert.deepEqual(got[0]!.header, h);
    // one random byte changed: a valid header or a bad_message, never anything else
    const bytes = encodeStepHeader(h, type);
    bytes[int(bytes.length)] = int(256);
    try {
      decodeStepHeader(bytes, type);
    } catch (e) {
      assert.ok(e instanceof MessageError && e.code === 'bad_message', String(e));
    }
  }
  assert.ok(n >= 100, `${n} random headers`);
});
