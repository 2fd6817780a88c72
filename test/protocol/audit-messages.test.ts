// Audit protocol messages: the fixed vectors of docs/protocol.md §8.3, the audit limits (headers
// beyond the activation protocol's 64 KiB), and reading one message off a stream in pieces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Stream } from '@libp2p/interface';
import { AUDIT_LIMITS, encodeAuditMessage, readAuditMessage, sendAuditMessage } from '../../src/protocol/audit-messages.js';
import { FrameError, MAX_HEADER_BYTES, fromHex, toHex } from '../../src/protocol/frame.js';

// Vector A1: an audit request, no payload.
const A1_HEX =
  '4f445349010a00002a000000000000007b2273657373696f6e4964223a227331222c2266726f6d53746570223a302c22746f53746570223a317d';
// Vector A2: a reply carrying one f32 (1.0) as payload.
const A2_HEX =
  '4f445349010a00002e000000040000007b226f6b223a747275652c226f7574707574223a7b226474797065223a22663332222c226279746573223a347d7d0000803f';

/** Just enough of a libp2p stream for the audit codec: message/close events, send, onDrain. */
class FakeStream extends EventTarget {
  sent: Uint8Array[] = [];
  deliver(bytes: Uint8Array): void {
    const evt = new Event('message') as Event & { data: Uint8Array };
    evt.data = bytes;
    this.dispatchEvent(evt);
  }
  send(b: Uint8Array): boolean {
    this.sent.push(b);
    return true;
  }
  async onDrain(): Promise<void> {}
}
const asStream = (s: FakeStream) => s as unknown as Stream;

test('audit messages reproduce the fixed vectors', () => {
  assert.deepEqual(encodeAuditMessage({ sessionId: 's1', fromStep: 0, toStep: 1 }).map(toHex), [A1_HEX]);
  const one = new Uint8Array(new Float32Array([1]).buffer);
  assert.deepEqual(encodeAuditMessage({ ok: true, output: { dtype: 'f32', bytes: 4 } }, one).map(toHex), [A2_HEX]);
});

test('a message read byte by byte equals the one sent; large headers and payloads are split into frames', async () => {
  const header = { ok: true, steps: Array.from({ length: 3000 }, (_, i) => ({ step: i, pos: i, nTokens: 1, dtype: 'f32', bytes: 4 })) };
  const payload = new Uint8Array(AUDIT_LIMITS.maxPayload * 2 + 5).map((_, i) => i & 0xff);
  const out = new FakeStream();
  await sendAuditMessage(asStream(out), header, payload);
  assert.ok(new TextEncoder().encode(JSON.stringify(header)).length > MAX_HEADER_BYTES);
  assert.equal(out.sent.length, 3);

  const bytes = Buffer.concat(out.sent);
  const inp = new FakeStream();
  const got = readAuditMessage(asStream(inp), 5000);
  for (let i = 0; i < bytes.length; i += 65_537) inp.deliver(new Uint8Array(bytes.subarray(i, i + 65_537)));
  const m = await got;
  assert.deepEqual(m.header, header);
  assert.deepEqual(m.payload, payload);
});

test('reading is bounded: a stalled, closed, oversized or foreign message is an error', async () => {
  await assert.rejects(readAuditMessage(asStream(new FakeStream()), 20), /within 20 ms/);

  const closed = new FakeStream();
  const c = readAuditMessage(asStream(closed), 5000);
  closed.deliver(fromHex(A2_HEX).subarray(0, 10));
  closed.dispatchEvent(new Event('close'));
  await assert.rejects(c, /closed before a complete message/);

  const big = new FakeStream();
  const b = readAuditMessage(asStream(big), 5000);
  big.deliver(fromHex('4f445349010a000000000000ffffffff')); // payload length over the frame limit
  await assert.rejects(b, /bad audit message: .*exceeds/);

  const step = new FakeStream();
  const s = readAuditMessage(asStream(step), 5000);
  step.deliver(fromHex('4f4453490106000012000000000000007b2273657373696f6e4964223a227331227d')); // a CLOSE
  await assert.rejects(s, /expected an audit message/);

  assert.throws(() => encodeAuditMessage({}, new Uint8Array(AUDIT_LIMITS.maxMessagePayload + 1)), FrameError);
  await assert.rejects(sendAuditMessage(asStream(new FakeStream()), [1, 2]), /JSON object/);
});
