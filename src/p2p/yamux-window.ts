// Yamux window updates at half a window instead of after every data frame.
//
// @libp2p/yamux 8.x answers every received data frame with a WINDOW_UPDATE frame (its
// YamuxStream.handleData calls sendWindowUpdate, which sends whenever any of the window was used).
// For odsi's step messages (2–130 KB, one data frame each) that is one extra muxer frame, one
// Noise message and one socket write per message at the receiver, and one decrypt + frame
// decode at the sender: about as much transport work as the message itself. go-yamux and
// hashicorp/yamux send an update only once at least half the receive window is used; this
// does the same for the streams of one muxer. A stream's receive window, its bound on what a
// peer can send unread, is unchanged; the sender never waits while half a window is still open.
//
// It reaches into the muxer's stream construction (`_newStream`) and the stream's window
// fields. If a yamux release changes them, streams keep yamux's own behaviour:
// `lazyWindowUpdates(stream)` says whether a stream was switched (test/p2p checks it).

import type { MessageStream, StreamMuxer, StreamMuxerFactory } from '@libp2p/interface';

/** yamux 8 StreamState values for which an update must go out at once (it carries SYN or ACK) */
const STATE_INIT = 0;
const STATE_SYN_RECEIVED = 2;

interface YamuxStreamFields {
  state: number;
  recvWindow: number;
  recvWindowCapacity: number;
  sendWindowUpdate(): void;
  getSendFlags(): number;
}

const SWITCHED = Symbol('odsi.lazyWindowUpdates');

function hasFields(s: unknown): s is YamuxStreamFields {
  const y = s as Partial<YamuxStreamFields> | null;
  return (
    y != null &&
    typeof y.sendWindowUpdate === 'function' &&
    typeof y.getSendFlags === 'function' &&
    typeof y.state === 'number' &&
    typeof y.recvWindow === 'number' &&
    typeof y.recvWindowCapacity === 'number'
  );
}

/** Switch one yamux stream to half-window updates; false if it does not look like a yamux 8 stream. */
function switchStream(stream: unknown): boolean {
  if (!hasFields(stream)) return false;
  const own = stream.sendWindowUpdate.bind(stream);
  stream.sendWindowUpdate = function (this: YamuxStreamFields) {
    // a SYN/ACK flag is due, or half the window is used: yamux's own update (which also grows the window)
    if (this.state !== STATE_INIT && this.state !== STATE_SYN_RECEIVED && this.recvWindow - this.recvWindowCapacity < this.recvWindow / 2) return;
    own();
  };
  (stream as unknown as Record<symbol, boolean>)[SWITCHED] = true;
  return true;
}

/** Whether a stream sends window updates at half a window (set by lazyWindowUpdatesMuxer). */
export function lazyWindowUpdates(stream: unknown): boolean {
  return (stream as Record<symbol, boolean> | null)?.[SWITCHED] === true;
}

/** Wrap a yamux muxer factory so every stream of its muxers sends window updates at half a window. */
export function lazyWindowUpdatesMuxer(factory: StreamMuxerFactory): StreamMuxerFactory {
  return {
    protocol: factory.protocol,
    createStreamMuxer(maConn: MessageStream): StreamMuxer {
      const muxer = factory.createStreamMuxer(maConn);
      const m = muxer as unknown as { _newStream?: (...a: unknown[]) => unknown };
      if (typeof m._newStream === 'function') {
        const newStream = m._newStream.bind(muxer);
        m._newStream = (...a: unknown[]) => {
          const s = newStream(...a);
          switchStream(s);
          return s;
        };
      }
      return muxer;
    },
  };
}
