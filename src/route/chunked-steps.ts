// A long input (a prompt, or the history a re-route replays) as consecutive steps of a few
// tokens each, several in flight at once, on a stage whose hops take one session's steps in
// order (a route: docs/protocol.md §4, at most MAX_QUEUED_PER_SESSION waiting per hop). Each hop
// starts on a chunk while the hop after it computes the chunk before, and a link carries one
// chunk while the next is computed, so a prompt crosses a k-hop route in about one hop's time
// per chunk plus the rest of the pipeline, instead of k whole-prompt computes and transfers.

import { EngineError, type StageInput, type StageOutput } from '../engine/types.js';
import { concatF32 } from '../util/concat-f32.js';

export interface ChunkOptions {
  /** tokens per step */
  chunk: number;
  /** steps sent ahead of the oldest unanswered one */
  inFlight: number;
}

/** what forwardInChunks sends steps to (a Stage; a route's outputs also carry their timeline) */
export interface ChunkTarget<O extends StageOutput> {
  readonly config: { readonly dim: number };
  forward(input: StageInput): Promise<O>;
}

/**
 * Runs `input` as steps of `o.chunk` tokens, at most `o.inFlight` unanswered at a time, and
 * returns what one step of it would: every row (concatenated), or the last row when
 * `input.lastRow` (each step asks for its last row only: the others' outputs are not needed).
 * `settled` covers every step's; `chunks` are the steps' own outputs, in order. An input of at
 * most one chunk is a single step.
 */
export async function forwardInChunks<O extends StageOutput>(
  stage: ChunkTarget<O>,
  input: StageInput,
  o: ChunkOptions,
): Promise<StageOutput & { chunks: O[] }> {
  const { nTokens, pos, hidden } = input;
  const chunk = Math.max(1, Math.floor(o.chunk));
  if (nTokens <= chunk) {
    const one = await stage.forward(input);
    return { ...one, chunks: [one] };
  }
  if (!hidden) throw new EngineError('chunked steps take hidden states', 'bad_input');
  const dim = stage.config.dim;
  const steps: Promise<O>[] = [];
  let sent = 0;
  const send = () => {
    const n = Math.min(chunk, nTokens - sent);
    const step = stage.forward({
      sessionId: input.sessionId,
      pos: pos + sent,
      nTokens: n,
      hidden: hidden.subarray(sent * dim, (sent + n) * dim),
      ...(input.lastRow ? { lastRow: true } : {}),
    });
    step.catch(() => undefined); // awaited in order below; a failure before it is the one thrown
    steps.push(step);
    sent += n;
  };
  while (sent < nTokens && steps.length < Math.max(1, o.inFlight)) send();
  const outs: O[] = [];
  for (let i = 0; i < steps.length; i++) {
    outs.push(await steps[i]!);
    if (sent < nTokens) send();
  }
  const settled = outs.flatMap((x) => (x.settled ? [x.settled] : []));
  const rows = input.lastRow ? outs.at(-1)!.hidden! : concatF32(outs.map((x) => x.hidden!));
  const out: StageOutput & { chunks: O[] } = { hidden: rows, computeMs: outs.reduce((a, x) => a + x.computeMs, 0), chunks: outs };
  if (settled.length) {
    out.settled = Promise.all(settled).then(() => undefined);
    out.settled.catch(() => undefined); // the caller awaits it
  }
  return out;
}
