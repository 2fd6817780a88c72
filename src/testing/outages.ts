// Fault kinds that make a node fail the way machines do: crash, stall, slow down. They act
// before a token-path step computes; onsets count the node's steps across sessions.

import { FaultSpecError, count, type FaultAction, type FaultKind } from './fault-kind.js';

/** Ends the process the way a crash or power loss would: no cleanup, no goodbye frames. */
function dieNow(): never {
  process.kill(process.pid, 'SIGKILL');
  // SIGKILL is not catchable; if the platform lacks it, exit without running handlers
  process.abort();
}

export const OUTAGE_KINDS: Record<string, FaultKind> = {
  crash: {
    sep: '@',
    syntax: 'crash@N',
    description: 'the process exits abruptly (SIGKILL) when step N+1 arrives, after serving N steps',
    create(arg, spec) {
      const n = count(arg, spec, 'N');
      return {
        spec,
        before: (v) => {
          if (v.nodeStep >= n) dieNow();
          return 'proceed';
        },
      };
    },
  },
  stall: {
    sep: '@',
    syntax: 'stall@N',
    description: 'after serving N steps the node keeps accepting steps but never answers them',
    create(arg, spec) {
      const n = count(arg, spec, 'N');
      return { spec, before: (v) => (v.nodeStep >= n ? 'drop' : 'proceed') };
    },
  },
  delay: {
    sep: ':',
    syntax: 'delay:MS',
    description: 'adds MS milliseconds to every step (before compute)',
    create(arg, spec) {
      const ms = count(arg, spec, 'MS');
      if (ms > 600_000) throw new FaultSpecError(`fault "${spec}": delay over 10 minutes`);
      return { spec, before: () => new Promise<FaultAction>((r) => setTimeout(() => r('proceed'), ms)) };
    },
  },
};
