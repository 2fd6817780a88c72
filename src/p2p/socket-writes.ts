// One socket write per muxer frame instead of one per buffer.
//
// Noise hands the TCP connection each encrypted message as two buffers (a 2-byte length, then
// the ciphertext), and @libp2p/tcp writes every buffer with its own socket.write. With Nagle off
// (the transport's default, which odsi keeps for latency) each is its own syscall and its own
// TCP segment: a step message costs at least two sends and a 2-byte packet. Corking the socket
// around one sendData call hands Node all of its buffers at once (one writev on uncork).
//
// It wraps the connection encrypter: before the handshake, the TCP connection's sendData is
// replaced on that one connection (not the class). If the connection is not a TCP one with a
// socket that can cork, nothing changes.

import type { ConnectionEncrypter, MessageStream, SecureConnectionOptions } from '@libp2p/interface';

interface SocketConnection {
  socket: { cork(): void; uncork(): void };
  sendData(data: Iterable<Uint8Array> & { byteLength: number }): { sentBytes: number; canSendMore: boolean };
}

const CORKED = Symbol('odsi.corkedWrites');

function corkWrites(connection: MessageStream): MessageStream {
  const c = connection as unknown as Partial<SocketConnection> & Record<symbol, boolean>;
  if (c[CORKED] || typeof c.sendData !== 'function' || typeof c.socket?.cork !== 'function' || typeof c.socket.uncork !== 'function') return connection;
  const socket = c.socket;
  const sendData = c.sendData.bind(connection);
  c.sendData = (data) => {
    socket.cork();
    try {
      return sendData(data);
    } finally {
      socket.uncork();
    }
  };
  c[CORKED] = true;
  return connection;
}

/** Whether a connection's socket writes are corked per sendData (set by corkedWritesEncrypter). */
export function corkedWrites(connection: unknown): boolean {
  return (connection as Record<symbol, boolean> | null)?.[CORKED] === true;
}

/** Wrap a connection encrypter so the TCP connections it secures write each frame's buffers at once. */
export function corkedWritesEncrypter<E>(encrypter: ConnectionEncrypter<E>): ConnectionEncrypter<E> {
  const w = Object.create(encrypter) as ConnectionEncrypter<E>;
  w.secureOutbound = (connection: MessageStream, options?: SecureConnectionOptions) => encrypter.secureOutbound(corkWrites(connection), options);
  w.secureInbound = (connection: MessageStream, options?: SecureConnectionOptions) => encrypter.secureInbound(corkWrites(connection), options);
  return w;
}
