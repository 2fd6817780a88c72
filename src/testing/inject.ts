// Fault injection for `odsi node` (tests, demos, chaos runs): make a node crash, stall or slow
// down on purpose so the gateway's detection and recovery can be exercised with real
// processes. Refused unless ODSI_ALLOW_FAULTS=1, so a production node can never be started
// misbehaving by a stray flag.
//
// Each spec names a behaviour from a registry. A behaviour may act before a step runs
// (delay, stall, crash) and/or rewrite the step's output — the second hook is where dishonest
// behaviours (noise, zeros, skip-layer, stale, …) plug in later via registerFaultKind().

/** What a node tells the injector about the step it is about to run. */
export interface FaultStepContext {
  sessionId: string;
  /** the route's step number within the session */
  step: number;
  pos: number;
  nTokens: number;
  /** steps this node has started before this one (all sessions), counted by the injector */
  nodeStep: number;
}

/** What the node should do with the step. */
export type FaultAction = 'proceed' | 'drop';

/** One injected behaviour. Both hooks are optional. */
export interface FaultBehaviour {
  readonly spec: string;
  /** before compute: may wait (delay), return 'drop' (never answer) or end the process */
  beforeStep?(ctx: FaultStepContext): Promise<FaultAction> | FaultAction;
  /** after compute: may replace the output (dishonest behaviours) */
  transformOutput?(hidden: Float32Array, ctx: FaultStepContext): Float32Array;
}

/** A fault kind: parses the argument after its name (`crash@3` → '3'). */
export interface FaultKind {
  /** e.g. 'crash@N' — shown in errors and --help */
  syntax: string;
  description: string;
  create(arg: string, spec: string): FaultBehaviour;
}

export class FaultSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FaultSpecError';
  }
}

/** Fault injection was asked for without ODSI_ALLOW_FAULTS=1. */
export class FaultsNotAllowedError extends Error {
  constructor(specs: string[]) {
    super(
      `refusing to inject faults (${specs.join(', ')}): fault injection is for tests and demos only; set ODSI_ALLOW_FAULTS=1 to allow it`,
    );
    this.name = 'FaultsNotAllowedError';
  }
}

function count(arg: string, spec: string, what: string): number {
  if (!/^\d+$/.test(arg)) throw new FaultSpecError(`fault "${spec}": ${what} must be a non-negative integer, got "${arg}"`);
  const n = Number(arg);
  if (!Number.isSafeInteger(n)) throw new FaultSpecError(`fault "${spec}": ${what} is too large`);
  return n;
}

/** Ends the process the way a crash or power loss would: no cleanup, no goodbye frames. */
function dieNow(): never {
  process.kill(process.pid, 'SIGKILL');
  // SIGKILL is not catchable; if the platform lacks it, exit without running handlers
  process.abort();
}

const kinds = new Map<string, { sep: '@' | ':'; kind: FaultKind }>();

/** Add a fault kind: `name@arg` (sep '@') or `name:arg` (sep ':'). */
export function registerFaultKind(name: string, sep: '@' | ':', kind: FaultKind): void {
  if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new Error(`bad fault kind name "${name}"`);
  kinds.set(name, { sep, kind });
}

registerFaultKind('crash', '@', {
  syntax: 'crash@N',
  description: 'the process exits abruptly (SIGKILL) when step N+1 arrives, after serving N steps',
  create(arg, spec) {
    const n = count(arg, spec, 'N');
    return {
      spec,
      beforeStep: (ctx) => {
        if (ctx.nodeStep >= n) dieNow();
        return 'proceed';
      },
    };
  },
});

registerFaultKind('stall', '@', {
  syntax: 'stall@N',
  description: 'after serving N steps the node keeps accepting steps but never answers them',
  create(arg, spec) {
    const n = count(arg, spec, 'N');
    return { spec, beforeStep: (ctx) => (ctx.nodeStep >= n ? 'drop' : 'proceed') };
  },
});

registerFaultKind('delay', ':', {
  syntax: 'delay:MS',
  description: 'adds MS milliseconds to every step (before compute: it shows up as queueing)',
  create(arg, spec) {
    const ms = count(arg, spec, 'MS');
    if (ms > 600_000) throw new FaultSpecError(`fault "${spec}": delay over 10 minutes`);
    return { spec, beforeStep: () => new Promise<FaultAction>((r) => setTimeout(() => r('proceed'), ms)) };
  },
});

/** The fault kinds known now, for help texts. */
export function faultKinds(): { name: string; syntax: string; description: string }[] {
  return [...kinds].map(([name, k]) => ({ name, syntax: k.kind.syntax, description: k.kind.description }));
}

/** Parse one spec such as `crash@5`, `stall@10`, `delay:200`. */
export function parseFaultSpec(spec: string): FaultBehaviour {
  const s = spec.trim();
  const m = /^([a-z][a-z0-9-]*)(?:([@:])(.*))?$/.exec(s); // accountability: bare kinds such as "zeros"
  const known = () => [...kinds.values()].map((k) => k.kind.syntax).join(', ');
  if (!m) throw new FaultSpecError(`fault "${spec}" is not of the form kind@N or kind:ARG (known: ${known()})`);
  const k = kinds.get(m[1]!);
  if (!k) throw new FaultSpecError(`unknown fault kind "${m[1]}" in "${spec}" (known: ${known()})`);
  if (m[2] !== undefined && k.sep !== m[2]) throw new FaultSpecError(`fault "${spec}": write it as ${k.kind.syntax}`); // accountability: bare kinds
  return k.kind.create(m[3] ?? '', s);
}

/** What a node server calls per step; one per node process. */
export class FaultInjector {
  private nodeStep = 0;
  /** steps dropped (stalled) so far */
  dropped = 0;

  constructor(readonly behaviours: FaultBehaviour[]) {}

  get specs(): string[] {
    return this.behaviours.map((b) => b.spec);
  }

  /** Run the before-step hooks in order; 'drop' means the node must not answer this step. */
  async beforeStep(ctx: Omit<FaultStepContext, 'nodeStep'>): Promise<FaultAction> {
    const full: FaultStepContext = { ...ctx, nodeStep: this.nodeStep++ };
    for (const b of this.behaviours) {
      if (!b.beforeStep) continue;
      if ((await b.beforeStep(full)) === 'drop') {
        this.dropped++;
        return 'drop';
      }
    }
    return 'proceed';
  }

  /** Run the output hooks in order (identity when none rewrites outputs). */
  transformOutput(hidden: Float32Array, ctx: Omit<FaultStepContext, 'nodeStep'>): Float32Array {
    let out = hidden;
    const full: FaultStepContext = { ...ctx, nodeStep: this.nodeStep - 1 };
    for (const b of this.behaviours) if (b.transformOutput) out = b.transformOutput(out, full);
    return out;
  }
}

/**
 * Build the injector for a node from its --fault specs, or undefined when there are none.
 * Throws FaultsNotAllowedError unless env.ODSI_ALLOW_FAULTS is '1', FaultSpecError on bad specs.
 */
export function createFaultInjector(specs: readonly string[], env: NodeJS.ProcessEnv = process.env): FaultInjector | undefined {
  const list = specs
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  if (!list.length) return undefined;
  if (env.ODSI_ALLOW_FAULTS !== '1') throw new FaultsNotAllowedError(list);
  return new FaultInjector(list.map(parseFaultSpec));
}
