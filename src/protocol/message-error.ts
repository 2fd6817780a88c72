// odsi activation-protocol message errors: the codes an ERROR carries and the error a decoder
// throws for a message that framed correctly but is not valid (docs/protocol.md §3, §5).

export type ErrorCode =
  | 'bad_frame' // framing violated; the stream is reset after this error
  | 'too_large' // frame or message over the limits; the stream is reset after this error
  | 'bad_message' // header not valid for its type, or payload does not match its shape
  | 'unknown_session'
  | 'wrong_model'
  | 'wrong_layers'
  | 'busy' // no KV memory / session slots left
  | 'deadline' // the remaining budget cannot cover this hop's expected work
  | 'unreachable' // the next hop (or the gateway) could not be reached
  | 'timeout'
  | 'engine' // the stage's forward failed
  | 'closed'
  | 'draining' // kv-transfer: the hop is leaving; header.replacement holds the session's KV now
  | 'forbidden' // the peer may not do this: unsigned/foreign OPEN, another owner's session, uninvited KV
  | 'limit' // this peer is over a per-peer limit (streams, sessions, KV share): other peers are still served
  | 'internal';

/** A message that framed correctly but is not valid: answer with an error, keep the stream. */
export class MessageError extends Error {
  constructor(
    message: string,
    readonly code: ErrorCode = 'bad_message',
    readonly sessionId?: string,
    readonly requestId?: number,
    /** type of the offending message, when known */
    readonly msgType?: number,
  ) {
    super(message);
    this.name = 'MessageError';
  }
}
