// Fewer socket writes: the buffers of every frame written in one tick go out in one writev.
//
// Noise hands the TCP connection each encrypted message as a length and a ciphertext, and
// @libp2p/tcp writes every buffer with its own socket.write. With Nagle off (the transport's
// default, which odsi keeps for latency) each is its own syscall and its own TCP segment: a
// step message cost two sends and a 2-byte packet, a yamux window update two more. Here the
// socket is corked at the first write of a tick and uncorked on process.nextTick (Node's own
// idiom for batching writes), or at once when CORK_FLUSH bytes have gathered, so a step
// message, the window update beside it and the other sessions' messages sent in the same tick
// leave in one writev (one per 64 KiB).
//
// Backpressure: @libp2p/tcp stopped at the first socket.write that returned false (over the
// socket's 16 KiB high-water mark), which with corking would be every write above 16 KiB in a
// tick. Here every buffer is written and the connection reports "full" only when the socket
// will emit 'drain' (writableNeedDrain) and holds more than CORK_LIMIT unsent bytes, so a
// tick's writes can gather up to CORK_LIMIT (plus one frame) and a slow reader still stops the
// sender, as before.
//
// Corking starts once the Noise handshake is done, so the handshake's last message leaves on its
// own and not in one writev with the streams a dialer opens the moment the connection is up:
// a listener holds streams that arrive before its upgrade adds the 'stream' listener as "early"
// streams, and @libp2p/yamux aborts the whole connection (every stream reset) at its 11th. That
// was why a peer opening 40 streams at once saw every one reset (test/e2e/hostile-limits): its
// handshake's last message and all 40 stream opens arrived in one read. This only makes it
// unlikely (a busy receiver's TCP can still join them); createHost's muxer bounds early streams
// like any inbound ones (maxEarlyStreams), which is the fix for odsi's own listeners.
//
// A connection reset (sendReset) first writes what the tick gathered, as an uncorked socket
// would have; a graceful close needs nothing (socket.end uncorks).
//
// It wraps the connection encrypter: after the handshake, the TCP connection's sendData is
// replaced on that one connection (not the class). If the connection is not a TCP one with a
// socket that can cork, nothing changes.

import type { ConnectionEncrypter, MessageStream, SecureConnectionOptions } from '@libp2p/interface';

/** unsent bytes a socket may hold before the connection asks its writers to wait for 'drain' */
export const CORK_LIMIT = 1024 * 1024;
/** gathered bytes that are written at once rather than at the end of the tick (bulk transfers gain nothing from waiting) */
export const CORK_FLUSH = 64 * 1024;

interface SocketConnection {
  socket: { cork(): void; uncork(): void; write(b: Uint8Array): boolean; writableLength: number; writableNeedDrain: boolean; destroyed: boolean };
  sendData(data: Iterable<Uint8Array> & { byteLength: number }): { sentBytes: number; canSendMore: boolean };
  sendReset(err?: Error): void;
}

const CORKED = Symbol('odsi.corkedWrites');

function corkWrites(connection: MessageStream): void {
  const c = connection as unknown as Partial<SocketConnection> & Record<symbol, boolean>;
  if (c[CORKED] || typeof c.sendData !== 'function' || typeof c.socket?.cork !== 'function' || typeof c.socket.uncork !== 'function') return;
  const socket = c.socket;
  if (typeof socket.writableNeedDrain !== 'boolean') return;
  /** this wrapper holds the socket corked (once: a flush at CORK_FLUSH may cork it again in the same tick) */
  let corked = false;
  let scheduled = false;
  const flush = () => {
    if (!corked) return;
    corked = false;
    socket.uncork();
  };
  const endOfTick = () => {
    scheduled = false;
    flush();
  };
  c.sendData = (data) => {
    if (!corked && !socket.destroyed) {
      corked = true;
      socket.cork();
      if (!scheduled) {
        scheduled = true;
        process.nextTick(endOfTick);
      }
    }
    let sentBytes = 0;
    for (const buf of data) {
      socket.write(buf);
      sentBytes += buf.byteLength;
    }
    if (socket.writableLength >= CORK_FLUSH) flush();
    return { sentBytes, canSendMore: !(socket.writableNeedDrain && socket.writableLength > CORK_LIMIT) };
  };
  if (typeof c.sendReset === 'function') {
    const sendReset = c.sendReset.bind(c);
    c.sendReset = (err) => {
      flush();
      sendReset(err);
    };
  }
  c[CORKED] = true;
}

/** Wrap a connection encrypter so the TCP connections it secures gather each tick's writes into one. */
export function corkedWritesEncrypter<E>(encrypter: ConnectionEncrypter<E>): ConnectionEncrypter<E> {
  const w = Object.create(encrypter) as ConnectionEncrypter<E>;
  w.secureOutbound = async (connection: MessageStream, options?: SecureConnectionOptions) => {
    const secured = await encrypter.secureOutbound(connection, options);
    corkWrites(connection);
    return secured;
  };
  w.secureInbound = async (connection: MessageStream, options?: SecureConnectionOptions) => {
    const secured = await encrypter.secureInbound(connection, options);
    corkWrites(connection);
    return secured;
  };
  return w;
}
