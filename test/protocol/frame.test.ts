// Wire format: fixed test vectors (reproduced in docs/protocol.md §9.1), chunking, limits, dtypes.
// STEP headers are binary (docs/protocol.md §4 "Binary headers"), ERROR and CLOSE headers JSON.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameDecoder, FrameError, MAX_FRAME_PAYLOAD, fromHex, toHex, encodeFrame } from '../../src/protocol/frame.js';
import { ACT_LIMITS, MessageDecoder, MessageError, MsgType, decodeTensor, encodeMessage, encodeTensor, type Message } from '../../src/protocol/messages.js';

// Vector 1: STEP, session "s1", request 7, pos 3, one token, f32 [1, -2], budget 250 ms.
const V1_HEX =
  '4f44534901030000310000000800000001020073310700000000000000000000000000000003000000010000000001000000020000000000000000406f400000000000803f000000c0';
const V1: Message = {
  type: MsgType.STEP,
  header: { sessionId: 's1', requestId: 7, step: 0, pos: 3, nTokens: 1, dtype: 'f32', shape: [1, 2], budgetMs: 250, timeline: [] },
  payload: encodeTensor(new Float32Array([1, -2]), 'f32'),
};
// Vector 2: the same activations as f16.
const V2_HEX =
  '4f4453490103000029000000040000000002007331080000000000000001000000000000000400000001000000010100000002000000000000003c00c0';
// Vector 3: ERROR.
const V3_HEX =
  '4f445349010500003d000000000000007b22636f6465223a22756e6b6e6f776e5f73657373696f6e222c22726561736f6e223a226e6f2073657373696f6e222c22706565724964223a2250227d';
// Vector 4: CLOSE.
const V4_HEX = '4f4453490106000012000000000000007b2273657373696f6e4964223a227331227d';
// Vector 5: a STEP chunked with a 4-byte frame payload limit (first frame MORE, second continuation).
const V5_HEX = [
  '4f44534901030100290000000400000000020073310100000000000000000000000000000000000000010000000001000000020000000000000000803f',
  '4f445349010300000000000004000000000000c0',
];

test('encoder reproduces the fixed vectors', () => {
  assert.deepEqual(encodeMessage(V1).map(toHex), [V1_HEX]);
  assert.deepEqual(
    encodeMessage({
      type: MsgType.STEP,
      header: { sessionId: 's1', requestId: 8, step: 1, pos: 4, nTokens: 1, dtype: 'f16', shape: [1, 2], timeline: [] },
      payload: encodeTensor(new Float32Array([1, -2]), 'f16'),
    }).map(toHex),
    [V2_HEX],
  );
  assert.deepEqual(encodeMessage({ type: MsgType.ERROR, header: { code: 'unknown_session', reason: 'no session', peerId: 'P' } }).map(toHex), [V3_HEX]);
  assert.deepEqual(encodeMessage({ type: MsgType.CLOSE, header: { sessionId: 's1' } }).map(toHex), [V4_HEX]);
  assert.deepEqual(
    encodeMessage(
      {
        type: MsgType.STEP,
        header: { sessionId: 's1', requestId: 1, step: 0, pos: 0, nTokens: 1, dtype: 'f32', shape: [1, 2], timeline: [] },
        payload: encodeTensor(new Float32Array([1, -2]), 'f32'),
      },
      { ...ACT_LIMITS, maxPayload: 4 },
    ).map(toHex),
    V5_HEX,
  );
  assert.equal(toHex(encodeTensor(new Float32Array([1, -2, 3.140625]), 'bf16')), '803f00c04940');
});

test('decoder reads the vectors back, byte by byte and all at once', () => {
  for (const split of [1, 7, 1000]) {
    const d = new MessageDecoder();
    const bytes = Buffer.concat([fromHex(V1_HEX), fromHex(V3_HEX), ...V5_HEX.map(fromHex), fromHex(V4_HEX)]);
    const got: Message[] = [];
    for (let i = 0; i < bytes.length; i += split) got.push(...d.push(new Uint8Array(bytes.subarray(i, i + split))));
    assert.deepEqual(got.map((m) => m.type), [MsgType.STEP, MsgType.ERROR, MsgType.STEP, MsgType.CLOSE]);
    const s = got[0]! as Extract<Message, { type: MsgType.STEP }>;
    assert.equal(s.header.budgetMs, 250);
    assert.deepEqual(decodeTensor(s.payload, 'f32', 2), new Float32Array([1, -2]));
    assert.deepEqual(decodeTensor(got[2]!.payload!, 'f32', 2), new Float32Array([1, -2]));
  }
  const f16 = new MessageDecoder().push(fromHex(V2_HEX))[0]!;
  assert.deepEqual(decodeTensor(f16.payload!, 'f16', 2), new Float32Array([1, -2]));
});

test('large prefill payloads are split into ≤1 MiB frames and reassembled', () => {
  const n = 700_000; // 2.8 MB of f32
  const x = new Float32Array(n).map((_, i) => Math.sin(i));
  const frames = encodeMessage({
    type: MsgType.STEP,
    header: { sessionId: 'big', requestId: 1, step: 0, pos: 0, nTokens: 1, dtype: 'f32', shape: [1, n], timeline: [] },
    payload: encodeTensor(x, 'f32'),
  });
  assert.equal(frames.length, 3);
  assert.ok(frames.every((f) => f.length <= 16 + 65536 + MAX_FRAME_PAYLOAD));
  const d = new MessageDecoder();
  const got = frames.flatMap((f) => d.push(f));
  assert.equal(got.length, 1);
  assert.deepEqual(decodeTensor(got[0]!.payload!, 'f32', n), x);
});

test('malformed and oversized frames raise clear errors', () => {
  assert.throws(() => new FrameDecoder().push(fromHex('deadbeef010300000000000000000000')), (e: unknown) => e instanceof FrameError && e.code === 'bad_frame' && /magic/.test(e.message));
  assert.throws(() => new FrameDecoder().push(fromHex('4f445349020300000000000000000000')), (e: unknown) => e instanceof FrameError && /version 2/.test(e.message));
  // declared payload 0x00200000 = 2 MiB > 1 MiB: refused from the preamble alone
  assert.throws(() => new FrameDecoder().push(fromHex('4f445349010300000200000000002000')), (e: unknown) => e instanceof FrameError && e.code === 'too_large');
  assert.throws(() => encodeFrame({ type: 3, flags: 0, header: new Uint8Array(1), payload: new Uint8Array(MAX_FRAME_PAYLOAD + 1) }), FrameError);
  // a framed but invalid message: MessageError, and the decoder carries on
  const d = new MessageDecoder();
  // a STEP header (flags 0, sessionId "x", requestId 9) that ends after its requestId: the ids it holds are echoed
  const cut = fromHex('00010078' + '0900000000000000');
  const bad = encodeFrame({ type: MsgType.STEP, flags: 0, header: cut, payload: new Uint8Array(0) });
  assert.throws(() => d.push(bad), (e: unknown) => e instanceof MessageError && e.code === 'bad_message' && e.sessionId === 'x' && e.requestId === 9 && /step: truncated/.test(e.message));
  // a JSON header where a binary one belongs is refused the same way
  const json = encodeFrame({ type: MsgType.STEP, flags: 0, header: new TextEncoder().encode('{"sessionId":"x","requestId":-1}'), payload: new Uint8Array(0) });
  assert.throws(() => d.push(json), (e: unknown) => e instanceof MessageError && e.code === 'bad_message');
  assert.throws(() => d.push(encodeFrame({ type: 0x7f, flags: 0, header: new TextEncoder().encode('{}'), payload: new Uint8Array(0) })), /unknown message type 0x7f/);
  assert.equal(d.push(fromHex(V4_HEX)).length, 1);
  assert.throws(() => decodeTensor(new Uint8Array(6), 'f32', 2), /expected 2 × f32 = 8/);
});

test('f16/bf16 round trips stay within their precision', () => {
  const x = new Float32Array([0, 1, -1, 0.1, 3.3, -65504, 1e-3, 12345.678]);
  const h = decodeTensor(encodeTensor(x, 'f16'), 'f16', x.length);
  const b = decodeTensor(encodeTensor(x, 'bf16'), 'bf16', x.length);
  for (let i = 0; i < x.length; i++) {
    assert.ok(Math.abs(h[i]! - x[i]!) <= Math.abs(x[i]!) * 1e-3 + 1e-7, `f16 ${x[i]} → ${h[i]}`);
    assert.ok(Math.abs(b[i]! - x[i]!) <= Math.abs(x[i]!) * 8e-3, `bf16 ${x[i]} → ${b[i]}`);
  }
});
