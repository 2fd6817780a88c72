// A message channel over one long-lived libp2p stream: decodes incoming frames into messages,
// writes outgoing messages in order with backpressure (send() false → wait for drain).
// Framing violations are fatal to the stream (an ERROR frame is sent, then the stream is
// reset); invalid-but-framed messages are reported and the stream stays usable.
// Bounds (ChannelOptions): the bytes one unfinished message may buffer (over it: `too_large`,
// stream reset) and, optionally, how long the stream may go without a complete message
// (over it, unless keepAlive() says the stream is in use: `timeout`, stream closed).

import type { Stream } from '@libp2p/interface';
import { FrameError, MAX_FRAME_PAYLOAD, MAX_HEADER_BYTES, MAX_MESSAGE_PAYLOAD } from '../protocol/frame.js';
import {
  MessageDecoder,
  MessageError,
  MsgType,
  encodeMessage,
  type ErrorCode,
  type ErrorHeader,
  type Message,
} from '../protocol/messages.js';

/** Per-stream bounds on what a remote peer can make this side hold. */
export interface ChannelOptions {
  /** largest reassembled message payload this stream accepts (default MAX_MESSAGE_PAYLOAD) */
  maxMessageBytes?: number;
  /** close the stream after this long without a complete message (default: never) */
  idleMs?: number;
  /** asked when the idle time is up: true keeps the stream (e.g. it carries a live session with its own timer) */
  keepAlive?(): boolean;
  /** told of every chunk received and frame sent (metrics) */
  onBytes?(dir: 'in' | 'out', n: number): void;
  /**
   * signs every ERROR about a session (with a `sessionId`) sent unsigned on this stream: a node's
   * upstream streams (protocol/error-signature.ts); an ERROR that carries a signature (relayed) goes as it is
   */
  signError?(h: ErrorHeader): ErrorHeader;
}

export interface ChannelHandlers {
  onMessage(m: Message): void;
  /** a framed message that failed validation (stream still usable) */
  onMessageError?(e: MessageError): void;
  /** stream gone: remote closed, reset, or a framing violation (err set) */
  onClose?(err?: Error): void;
}

export class Channel {
  private readonly decoder: MessageDecoder;
  private idleTimer?: NodeJS.Timeout;
  /** when the last complete message arrived (performance.now()): the idle timer reads it when it fires */
  private lastMessageAt = performance.now();
  private writeChain: Promise<void> = Promise.resolve();
  private closed = false;
  /** a framing violation was seen: the stream is being reset */
  private failed = false;
  /** bytes written so far (both directions are useful for metrics) */
  bytesOut = 0;
  bytesIn = 0;

  constructor(
    readonly stream: Stream,
    readonly remotePeer: string,
    private readonly localPeer: string,
    private readonly handlers: ChannelHandlers,
    private readonly opts: ChannelOptions = {},
  ) {
    const maxMessage = opts.maxMessageBytes ?? MAX_MESSAGE_PAYLOAD;
    // a frame never needs to be larger than the largest message: an oversize length is refused at its preamble
    this.decoder = new MessageDecoder({
      maxHeader: MAX_HEADER_BYTES,
      maxPayload: Math.min(MAX_FRAME_PAYLOAD, maxMessage),
      maxMessagePayload: maxMessage,
    });
    if (opts.idleMs !== undefined) this.armIdle(opts.idleMs);
    stream.addEventListener('message', (evt) => {
      const d = evt.data;
      const bytes = d instanceof Uint8Array ? d : d.subarray();
      this.bytesIn += bytes.length;
      opts.onBytes?.('in', bytes.length);
      if (this.failed) return; // the byte stream is out of step: nothing more is read
      let msgs: Message[];
      try {
        msgs = this.decoder.push(bytes);
      } catch (e) {
        if (e instanceof MessageError) {
          if (handlers.onMessageError) handlers.onMessageError(e);
          else if (e.msgType !== MsgType.ERROR) this.sendError(e.code, e.message, { sessionId: e.sessionId, requestId: e.requestId });
          return;
        }
        this.fail(e as Error);
        return;
      }
      if (msgs.length) this.lastMessageAt = performance.now(); // no timer work per message
      for (const m of msgs) handlers.onMessage(m);
    });
    stream.addEventListener('close', (evt) => this.finish(evt.error));
    stream.addEventListener('remoteCloseWrite', () => {
      // the peer will send nothing more; close our side too
      void this.close();
    });
  }

  get isOpen(): boolean {
    return !this.closed && this.stream.status === 'open';
  }

  /** Queue a message; resolves once its frames were handed to the stream (drained if needed). */
  send(m: Message): Promise<void> {
    if (m.type === MsgType.ERROR && this.opts.signError && m.header.sessionId !== undefined && m.header.signature === undefined)
      m = { ...m, header: this.opts.signError(m.header) };
    const frames = encodeMessage(m);
    const p = this.writeChain.then(async () => {
      if (!this.isOpen) throw new Error(`stream to ${this.remotePeer} is closed`);
      for (const f of frames) {
        this.bytesOut += f.length;
        this.opts.onBytes?.('out', f.length);
        if (!this.stream.send(f)) await this.stream.onDrain();
      }
    });
    this.writeChain = p.catch(() => {});
    return p;
  }

  sendError(
    code: ErrorCode | string,
    reason: string,
    extra: { sessionId?: string; requestId?: number; peerId?: string; hop?: number } = {},
  ): Promise<void> {
    const header = { code, reason, peerId: extra.peerId ?? this.localPeer } as Message['header'] & Record<string, unknown>;
    if (extra.sessionId !== undefined) header.sessionId = extra.sessionId;
    if (extra.requestId !== undefined) header.requestId = extra.requestId;
    if (extra.hop !== undefined) header.hop = extra.hop;
    return this.send({ type: MsgType.ERROR, header } as Message).catch(() => {});
  }

  /**
   * One timer per stream, armed at open: when it fires it looks at the last complete message and,
   * if the stream was not idle that long, waits out the rest (messages themselves touch no timer).
   */
  private armIdle(waitMs: number): void {
    const ms = this.opts.idleMs!;
    this.idleTimer = setTimeout(() => {
      if (this.closed) return;
      const idle = performance.now() - this.lastMessageAt;
      if (idle < ms) return this.armIdle(ms - idle);
      if (this.opts.keepAlive?.()) {
        this.lastMessageAt = performance.now();
        return this.armIdle(ms);
      }
      void this.sendError('timeout', `no complete message for ${ms} ms; stream closed`).finally(() => void this.close());
    }, waitMs);
    this.idleTimer.unref?.();
  }

  /** A framing violation: tell the peer why, then reset (the byte stream cannot be resynchronised). */
  private fail(e: Error): void {
    if (this.closed || this.failed) return;
    this.failed = true;
    const code = e instanceof FrameError ? e.code : 'internal';
    void this.sendError(code, e.message).finally(() => {
      setTimeout(() => {
        try {
          this.stream.abort(e);
        } catch {
          /* already gone */
        }
      }, 50).unref?.();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.writeChain;
      await this.stream.close({ signal: AbortSignal.timeout(2000) });
    } catch {
      try {
        this.stream.abort(new Error('close timed out'));
      } catch {
        /* already gone */
      }
    }
    this.finish();
  }

  abort(err: Error): void {
    try {
      this.stream.abort(err);
    } catch {
      /* already gone */
    }
    this.finish(err);
  }

  private finish(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.handlers.onClose?.(err);
  }
}
