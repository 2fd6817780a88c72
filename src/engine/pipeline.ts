// Running one step through a chain of stages: token ids go into the first, hidden states flow
// stage to stage, logits come out of the last. Stages may be local engines or remote routes.

import { EngineError, type Stage } from './types.js';

/** Check that stages form a whole model: contiguous ranges, embedding first, head last. */
export function validatePipeline(stages: Stage[]): void {
  if (stages.length === 0) throw new EngineError('empty pipeline', 'bad_input');
  const first = stages[0];
  const last = stages[stages.length - 1];
  if (!first.range.embed) throw new EngineError('the first stage of a pipeline must apply the embedding', 'bad_input');
  if (!last.range.head) throw new EngineError('the last stage of a pipeline must apply the LM head', 'bad_input');
  if (first.range.start !== 0) throw new EngineError(`pipeline starts at layer ${first.range.start}, not 0`, 'bad_input');
  const n = first.config.nLayers;
  if (last.range.end !== n) throw new EngineError(`pipeline ends at layer ${last.range.end}, the model has ${n}`, 'bad_input');
  for (let i = 1; i < stages.length; i++) {
    const a = stages[i - 1].range;
    const b = stages[i].range;
    if (a.end !== b.start)
      throw new EngineError(`pipeline gap: stage ${i - 1} ends at layer ${a.end}, stage ${i} starts at ${b.start}`, 'bad_input');
    if (a.head || b.embed) throw new EngineError(`embedding/head in the middle of the pipeline (stage ${i - 1}/${i})`, 'bad_input');
  }
}

export interface PipelineStep {
  logits: Float32Array;
  /** compute ms reported by each stage, in pipeline order */
  stageMs: number[];
  /** some stage's output was provisional: resolves once all of them settled (see StageOutput.settled) */
  settled?: Promise<void>;
}

/** One forward step of nTokens = tokens.length new tokens at position pos. */
export async function forwardPipeline(
  stages: Stage[],
  step: { sessionId: string; pos: number; tokens: Int32Array; allLogits?: boolean },
): Promise<PipelineStep> {
  const nTokens = step.tokens.length;
  let hidden: Float32Array | undefined;
  const stageMs: number[] = [];
  const pending: Promise<void>[] = [];
  // a head without layers reads only the rows it returns logits for: without allLogits, the
  // stage before it returns just the last row (a route's last hop sends one row, not nTokens)
  const head = stages[stages.length - 1]!;
  const lastRowBefore = nTokens > 1 && !step.allLogits && head.range.start === head.range.end ? stages.length - 2 : -1;
  for (let i = 0; i < stages.length; i++) {
    const s = stages[i];
    const out = await s.forward({
      sessionId: step.sessionId,
      pos: step.pos,
      nTokens,
      ...(i === 0 ? { tokens: step.tokens } : { hidden }),
      ...(s.range.head ? { allLogits: step.allLogits ?? false } : {}),
      ...(i === lastRowBefore ? { lastRow: true } : {}),
    });
    stageMs.push(out.computeMs);
    if (out.settled) pending.push(out.settled);
    if (s.range.head) {
      if (!out.logits) throw new EngineError(`stage ${i} (head) returned no logits`, 'internal');
      if (!pending.length) return { logits: out.logits, stageMs };
      const settled = pending.length === 1 ? pending[0]! : Promise.all(pending).then(() => undefined);
      settled.catch(() => undefined); // the caller awaits it; a step abandoned meanwhile must not crash the process
      return { logits: out.logits, stageMs, settled };
    }
    if (!out.hidden) throw new EngineError(`stage ${i} returned no hidden states`, 'internal');
    hidden = i === lastRowBefore ? asLastRow(out.hidden, nTokens) : out.hidden;
  }
  throw new EngineError('pipeline has no head stage', 'bad_input');
}

/** [nTokens, dim] rows holding `row` as the last (the head reads no other) */
function asLastRow(row: Float32Array, nTokens: number): Float32Array {
  const rows = new Float32Array(nTokens * row.length);
  rows.set(row, (nTokens - 1) * row.length);
  return rows;
}

export function closePipelineSession(stages: Stage[], sessionId: string): void {
  for (const s of stages) {
    try {
      s.closeSession(sessionId);
    } catch {
      // best effort: a remote stage may already be gone
    }
  }
}
