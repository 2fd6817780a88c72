// What a route asks of whoever checks its steps (the gateway's accountability, or nothing):
// one call per RESULT, before the output is released. The route knows only this interface;
// the implementation is chosen once at start-up and handed to the route.

import type { StageInput } from '../engine/types.js';
import type { Dtype, StepHeader } from '../protocol/messages.js';

export interface RouteHopInfo {
  peerId: string;
  addrs: string[];
  start: number;
  end: number;
}

/** One step of a route as the gateway saw it. */
export interface RouteStepView {
  sessionId: string;
  hops: readonly RouteHopInfo[];
  dtype: Dtype;
  input: StageInput;
  header: StepHeader;
  /** STEP payload bytes as sent to the first hop */
  sent: Uint8Array;
  /** RESULT payload bytes as received */
  payload: Uint8Array;
}

export interface StepFailure {
  /** remote error code for the RouteError: 'custody' | 'misbehaviour' | 'audit_unanswered' */
  code: string;
  reason: string;
  peerId: string;
}

export interface StepVerifier {
  /** undefined = release the step's output; a failure = fail the step naming the culprit */
  afterStep(v: RouteStepView): Promise<StepFailure | undefined>;
}
