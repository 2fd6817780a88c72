// A Backend that runs each request through a pipeline of stages with the engine's generation
// loop. Where the stages come from is the subclass's business: in-process engines (local.ts)
// or embed + remote route + head (gateway.ts).

import { randomUUID } from 'node:crypto';
import { generateStream } from '../engine/generate.js';
import type { Stage } from '../engine/types.js';
import type { Backend, BackendModelInfo, BackendRequest, BackendResult, BackendToken } from '../api/backend.js';
import type { Tokenizer } from '../tokenizer/types.js';
import { TimedStage } from './timed.js';

/** The stages one request runs through, and how to give them back. */
export interface RequestPipeline {
  stages: TimedStage[];
  /** release per-request resources (e.g. close the route); called once, even on error */
  release(): Promise<void>;
}

/**
 * Watches requests as they run (e.g. the dashboard's recent-requests store). Called on the
 * token path, so implementations only record (O(1), no I/O) and never throw.
 */
export interface RequestObserver {
  started(sessionId: string, req: BackendRequest): void;
  token(sessionId: string, t: BackendToken): void;
  /** once per request: how it ended (error: the failure's message) */
  finished(sessionId: string, end: { finishReason?: BackendResult['finishReason']; error?: string }): void;
}

export abstract class PipelineBackend implements Backend {
  abstract readonly model: BackendModelInfo;
  abstract readonly tokenizer: Tokenizer;
  abstract readonly addBos: boolean;

  /** build the pipeline for one request; the session id is unique to the request */
  protected abstract openPipeline(sessionId: string, req: BackendRequest): Promise<RequestPipeline>;

  unavailable(): string | undefined {
    return undefined;
  }

  abstract close(): Promise<void>;

  /** who watches requests (at most one; undefined: nobody) */
  observer?: RequestObserver;
  /** GenerateOptions.pipelineDepth of every request (undefined: the loop's default) */
  protected pipelineDepth?: number;

  generate(req: BackendRequest): AsyncGenerator<BackendToken, BackendResult, void> {
    return this.stream(randomUUID(), req);
  }

  /** generate() under a given session id (unique to the request) */
  protected async *stream(sessionId: string, req: BackendRequest): AsyncGenerator<BackendToken, BackendResult, void> {
    const obs = this.observer;
    obs?.started(sessionId, req);
    let end: { finishReason?: BackendResult['finishReason']; error?: string } = { finishReason: 'abort' };
    try {
      const r = yield* this.pipelineStream(sessionId, req, obs);
      end = { finishReason: r.finishReason };
      return r;
    } catch (e) {
      end = { error: (e as Error).message };
      throw e;
    } finally {
      obs?.finished(sessionId, end);
    }
  }

  private async *pipelineStream(
    sessionId: string,
    req: BackendRequest,
    obs?: RequestObserver,
  ): AsyncGenerator<BackendToken, BackendResult, void> {
    const pipe = await this.openPipeline(sessionId, req);
    let emitted = '';
    let it: AsyncGenerator<unknown, unknown> | undefined;
    try {
      const gen = generateStream(pipe.stages as Stage[], this.tokenizer, req.promptIds, {
        maxTokens: req.maxTokens,
        sampling: { ...req.sampling },
        sessionId,
        signal: req.signal,
        constraint: req.constraint,
        logprobs: req.logprobs,
        pipelineDepth: this.pipelineDepth,
      });
      it = gen;
      for (;;) {
        const r = await gen.next();
        if (r.done) {
          const res = r.value;
          return {
            tokens: res.tokens,
            finishReason: res.finishReason,
            promptTokens: res.promptTokens,
            // the loop's final text = every released piece + the decoder's flushed tail
            tailText: res.text.startsWith(emitted) ? res.text.slice(emitted.length) : '',
          };
        }
        const ev = r.value;
        emitted += ev.text;
        // in-process stages finish without real I/O: give the event loop a turn per token so
        // sockets (client disconnects, other requests' streams) are served during generation
        await new Promise<void>((res) => setImmediate(res));
        // the remote stages' own round trip for this step (several routes: their sum)
        let routeMs: number | undefined;
        for (const st of pipe.stages) {
          const ms = st.routeMs(ev.pos);
          if (ms !== undefined) routeMs = (routeMs ?? 0) + ms;
        }
        const tok: BackendToken = {
          id: ev.id,
          text: ev.text,
          step: ev.step,
          stepMs: ev.stepMs,
          logprob: ev.logprob,
          top: ev.top,
          timeline: {
            step: ev.step,
            token: ev.id,
            stepMs: Math.round(ev.stepMs * 1000) / 1000,
            hops: pipe.stages.flatMap((s) => s.hops(ev.pos)),
            ...(routeMs !== undefined ? { routeMs: Math.round(routeMs * 1000) / 1000 } : {}),
          },
        };
        obs?.token(sessionId, tok);
        yield tok;
      }
    } finally {
      // an early return (client gone, stop string) leaves the loop suspended: finish it so
      // it closes the sessions on every stage
      await it?.return(undefined).catch(() => undefined);
      await pipe.release();
    }
  }
}
