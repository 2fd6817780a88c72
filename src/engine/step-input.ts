// What every engine checks of a step before it touches a session: the same refusal for the same
// input on every engine (the input may come from a hostile peer). A node that computed a
// non-finite input would sign a non-finite output, which no audit can reproduce: refused here.

import type { ModelConfig } from '../model/types.js';
import { allFinite } from '../util/all-finite.js';
import { EngineError, type StageInput, type StageRange } from './types.js';

export interface StepInputBounds {
  config: ModelConfig;
  range: StageRange;
  /** positions a session may hold */
  maxContext: number;
  /** the session's cached length; undefined when the stage holds no such session */
  cachedLength: number | undefined;
}

/** Throws an EngineError (bad_input, unknown_session or capacity) naming what is wrong with `input`. */
export function checkStepInput(input: StageInput, b: StepInputBounds): void {
  const { pos, nTokens: n, sessionId } = input;
  if (typeof sessionId !== 'string') throw new EngineError('sessionId must be a string', 'bad_input');
  if (!Number.isInteger(n) || n < 1) throw new EngineError(`nTokens must be a positive integer, got ${n}`, 'bad_input');
  if (!Number.isInteger(pos) || pos < 0) throw new EngineError(`pos must be a non-negative integer, got ${pos}`, 'bad_input');
  if (pos + n > b.maxContext) throw new EngineError(`context overflow: ${pos + n} positions > maximum context ${b.maxContext}`, 'capacity');
  const len = b.cachedLength;
  if (len === undefined && pos !== 0)
    throw new EngineError(`unknown session ${sessionId} (first step must start at position 0, got ${pos})`, 'unknown_session');
  if (len !== undefined && pos > len) throw new EngineError(`position ${pos} is beyond the session's cached length ${len}`, 'bad_input');
  const c = b.config;
  if (b.range.embed) {
    const tokens = input.tokens;
    if (!tokens || tokens.length !== n) throw new EngineError(`expected ${n} token ids, got ${tokens?.length ?? 'none'}`, 'bad_input');
    for (const id of tokens)
      if (!(id >= 0 && id < c.vocabSize)) throw new EngineError(`token id ${id} out of range [0, ${c.vocabSize})`, 'bad_input');
  } else {
    const h = input.hidden;
    if (!h || h.length !== n * c.dim)
      throw new EngineError(`expected hidden of ${n}×${c.dim} floats, got ${h?.length ?? 'none'}`, 'bad_input');
    if (!allFinite(h)) throw new EngineError('hidden states must be finite', 'bad_input');
  }
}
