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
// It wraps the connection encrypter: before the handshake, the TCP connection's sendData is
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
}

const CORKED = Symbol('odsi.corkedWrites');

function corkWrites(connection: MessageStream): MessageStream {
  const c = connection as unknown as Partial<SocketConnection> & Record<symbol, boolean>;
  if (c[CORKED] || typeof c.sendData !== 'function' || typeof c.socket?.cork !== 'function' || typeof c.socket.uncork !== 'function') return connection;
  const socket = c.socket;
  if (typeof socket.writableNeedDrain !== 'boolean') return connection;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  c.sendData = (data) => {
    if (!corked && !socket.destroyed) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    let sentBytes = 0;
    for (const buf of data) {
      socket.write(buf);
      sentBytes += buf.byteLength;
    }
    if (corked && socket.writableLength >= CORK_FLUSH) uncork();
    return { sentBytes, canSendMore: !(socket.writableNeedDrain && socket.writableLength > CORK_LIMIT) };
  };
  c[CORKED] = true;
  return connection;
}

/** Wrap a connection encrypter so the TCP connections it secures gather each tick's writes into one. */
export function corkedWritesEncrypter<E>(encrypter: ConnectionEncrypter<E>): ConnectionEncrypter<E> {
  const w = Object.create(encrypter) as ConnectionEncrypter<E>;
  w.secureOutbound = (connection: MessageStream, options?: SecureConnectionOptions) => encrypter.secureOutbound(corkWrites(connection), options);
  w.secureInbound = (connection: MessageStream, options?: SecureConnectionOptions) => encrypter.secureInbound(corkWrites(connection), options);
  return w;
}
