// Token-by-token text output that never splits a UTF-8 character: byte tokens such as
// <0xE2><0x80><0x99> are held until the character is complete.
import type { StreamDecoder } from './types.js';

export interface PieceSource {
  pieceBytes(id: number, special?: boolean): Uint8Array;
  /** strip one leading space from the first non-empty piece at the start of text (SPM) */
  readonly stripLeadingSpace: boolean;
  readonly bosId?: number;
}

export function createStreamDecoder(src: PieceSource, opts: { atStart?: boolean; special?: boolean } = {}): StreamDecoder {
  // ignoreBOM: a U+FEFF the model generates is text, not a byte-order mark
  const dec = new TextDecoder('utf-8', { ignoreBOM: true });
  let atStart = opts.atStart ?? false;
  let first = true;
  return {
    push(id: number): string {
      if (first && id === src.bosId) atStart = true;
      first = false;
      let bytes = src.pieceBytes(id, opts.special);
      if (atStart && bytes.length > 0) {
        if (src.stripLeadingSpace && bytes[0] === 0x20) bytes = bytes.subarray(1);
        atStart = false;
      }
      return bytes.length > 0 ? dec.decode(bytes, { stream: true }) : '';
    },
    flush(): string {
      return dec.decode();
    },
  };
}

/** Whole-sequence decode with the same rules as the stream decoder. */
export function decodeAll(src: PieceSource, ids: number[], opts: { atStart?: boolean; special?: boolean } = {}): string {
  const sd = createStreamDecoder(src, { atStart: opts.atStart ?? true, special: opts.special });
  let s = '';
  for (const id of ids) s += sd.push(id);
  return s + sd.flush();
}
