// A peer that opens many streams the moment its connection is up gets every one of them: the
// listener reads the Noise handshake's last message and those streams' opens together (one
// writev with corked writes, or joined by TCP on a busy host), and before createHost bounded
// yamux's "early" streams (those before the upgrade adds its 'stream' listener) like any inbound
// stream, the 11th aborted the connection and all 40 were reset during protocol negotiation.
// Two real hosts on 127.0.0.1, with socket writes corked (the default) and not.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { peerIdFromString } from '@libp2p/peer-id';
import type { Stream } from '@libp2p/interface';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';

const PROTO = '/odsi/test-early-streams/1.0.0';
const STREAMS = 40;
const hosts: OdsiHost[] = [];
after(async () => {
  await Promise.all(hosts.map((h) => h.stop()));
});

/** resolves with the first message's first byte on `s`, rejects if the stream ends first or after `ms` */
const firstByte = (s: Stream, ms: number) =>
  new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no reply')), ms);
    s.addEventListener('message', (evt) => {
      clearTimeout(timer);
      resolve((evt.data instanceof Uint8Array ? evt.data : evt.data.subarray())[0]!);
    });
    s.addEventListener('close', (evt) => {
      clearTimeout(timer);
      reject(evt.error ?? new Error('closed before a reply'));
    });
  });

for (const corkWrites of [true, false]) {
  test(`${STREAMS} streams opened at once on a fresh connection are all served (corkWrites ${corkWrites})`, { timeout: 10_000 }, async () => {
    const server = await createHost({ identity: generateIdentity(), corkWrites });
    const client = await createHost({ identity: generateIdentity(), corkWrites });
    hosts.push(server, client);
    let handled = 0;
    await server.libp2p.handle(
      PROTO,
      (stream) => {
        // each stream is answered with its own number
        stream.send(Uint8Array.of(handled++));
      },
      { maxInboundStreams: STREAMS },
    );
    const signal = AbortSignal.timeout(8000);
    const pid = peerIdFromString(server.peerId);
    // the dial and every stream open in the same tick, as a gateway or an attacker would
    const opened = await Promise.allSettled(
      Array.from({ length: STREAMS }, async () => {
        await client.dial(server.peerId, server.addrs(), signal);
        const s = await client.libp2p.dialProtocol(pid, PROTO, { signal, maxOutboundStreams: STREAMS });
        return firstByte(s, 5000);
      }),
    );
    const failed = opened.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error).name ?? r.reason)] : []));
    assert.deepEqual(failed, [], `${failed.length} of ${STREAMS} streams failed`);
    assert.equal(handled, STREAMS);
    const replies = opened.map((r) => (r as PromiseFulfilledResult<number>).value).sort((a, b) => a - b);
    assert.deepEqual(replies, Array.from({ length: STREAMS }, (_, i) => i));
    assert.equal(client.libp2p.getConnections(pid).length, 1, 'one connection carried them all');
  });
}
