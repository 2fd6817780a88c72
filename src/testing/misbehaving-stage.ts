// A Stage wrapper that runs a node's injected misbehaviours around every forward: the
// before-step hooks (crash, stall, delay) on token-path steps, then the output rewrites (the
// dishonest kinds) on token-path steps and audit re-executions alike. It counts the node's
// token-path steps across sessions, which is what onsets `@N` are measured in.

import type { SessionState, Stage, StageInput, StageOutput } from '../engine/types.js';
import { REEXEC_SESSION_PREFIX } from '../accountability/node/audit-exec.js';
import type { Misbehaviour, StepView } from './fault-kind.js';

export class MisbehavingStage implements Stage {
  /** token-path steps started so far */
  private nodeSteps = 0;
  /** steps dropped (stalled) so far */
  dropped = 0;
  readonly exportSession?: (sessionId: string) => SessionState | undefined | Promise<SessionState | undefined>;
  readonly importSession?: (sessionId: string, state: SessionState) => void | Promise<void>;

  constructor(
    private readonly inner: Stage,
    private readonly faults: readonly Misbehaviour[],
  ) {
    this.exportSession = inner.exportSession?.bind(inner);
    this.importSession = inner.importSession?.bind(inner);
  }

  get range(): Stage['range'] {
    return this.inner.range;
  }
  get config(): Stage['config'] {
    return this.inner.config;
  }
  get profile(): string {
    return this.inner.profile;
  }
  get computeThread(): Stage['computeThread'] {
    return this.inner.computeThread;
  }

  async forward(input: StageInput): Promise<StageOutput> {
    const audit = input.sessionId.startsWith(REEXEC_SESSION_PREFIX);
    const view: StepView = {
      sessionId: input.sessionId,
      pos: input.pos,
      nTokens: input.nTokens,
      input: input.hidden ?? new Float32Array(0),
      nodeStep: audit ? this.nodeSteps : this.nodeSteps++,
      audit,
    };
    if (!audit) {
      for (const f of this.faults) {
        if (f.before && (await f.before(view)) === 'drop') {
          this.dropped++;
          return new Promise<never>(() => {}); // never answered
        }
      }
    }
    const out = await this.inner.forward(input);
    if (!out.hidden) return out;
    let hidden = out.hidden;
    // a lastRow step's output is one row: the rewrites see it as a one-token output
    const shown = input.lastRow && input.nTokens > 1 ? { ...view, nTokens: 1 } : view;
    for (const f of this.faults) if (f.rewrite) hidden = f.rewrite(hidden, shown);
    return { ...out, hidden };
  }

  sessionLength(sessionId: string): number {
    return this.inner.sessionLength(sessionId);
  }
  closeSession(sessionId: string): void {
    this.inner.closeSession(sessionId);
  }
  dispose(): Promise<void> {
    return this.inner.dispose();
  }
}
