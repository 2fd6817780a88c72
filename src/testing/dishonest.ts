// Dishonest node behaviours for tests and demos, registered into the fault-injection registry
// (src/fault/inject.ts; refused unless ODSI_ALLOW_FAULTS=1). Every kind takes an optional
// onset `@N`: honest for the node's first N steps (all sessions), dishonest from then on.
//
//   noise:STD[@N]        adds Gaussian noise of STD × the row's RMS to every output value
//   zeros[@N]            sends all-zero activations
//   skip-layer[@N]       skips its layers: sends its input on unchanged (exactly one skipped
//                        layer on a one-layer range)
//   wrong-weights[:SEED][@N]  emulates weights of another seed of the same shape: a seeded
//                        per-channel gain and channel mixing applied to the honest output
//   stale[@N]            replays its previous output of the same shape in this session
//   equivocate[@N]       sends a noised output downstream but answers an auditor with the
//                        honest one, each under its own signed receipt for the same step
//   forge[@N]            signs its receipts with a corrupted signature
//
// Output-rewriting kinds act through the injector's transformOutput hook; forge and
// equivocate are read by the receipt stamper (stamp.ts) through `accountability` below.

import { Rng } from '../util/rng.js';
import { FaultSpecError, registerFaultKind, type FaultBehaviour, type FaultStepContext } from './inject.js';

/** What the stamper asks a behaviour about the step it just signed. */
export interface DishonestSigning {
  /** corrupt the signature of this step's receipt */
  forge?(sessionId: string, step: number): boolean;
  /** honest output to answer auditors with (this step was equivocated) */
  equivocated?(sessionId: string, step: number): Float32Array | undefined;
}

export type DishonestBehaviour = FaultBehaviour & { accountability?: DishonestSigning };

/** Decoded inputs of recent steps (skip-layer needs them); set by the stamper before compute. */
const stepInputs = new Map<string, Float32Array>();
export function rememberStepInput(sessionId: string, step: number, input: Float32Array): void {
  stepInputs.set(`${sessionId}|${step}`, input);
  if (stepInputs.size > 64) stepInputs.delete(stepInputs.keys().next().value as string);
}

function parseOnset(arg: string, spec: string): { value: string; onset: number } {
  const at = arg.lastIndexOf('@');
  const value = at >= 0 ? arg.slice(0, at) : arg;
  const o = at >= 0 ? arg.slice(at + 1) : '0';
  if (!/^\d+$/.test(o)) throw new FaultSpecError(`fault "${spec}": onset after @ must be a non-negative integer, got "${o}"`);
  return { value, onset: Number(o) };
}

function noArg(arg: string, spec: string): number {
  // registered with sep '@': "zeros" → '', "zeros@3" → '3'
  if (arg === '') return 0;
  if (!/^\d+$/.test(arg)) throw new FaultSpecError(`fault "${spec}": expected nothing or @N (onset step), got "${arg}"`);
  return Number(arg);
}

function rowRms(x: Float32Array, dim: number, t: number): number {
  let s = 0;
  for (let i = t * dim; i < (t + 1) * dim; i++) s += x[i]! * x[i]!;
  return Math.sqrt(s / dim);
}

function gaussian(rng: Rng): number {
  const u = Math.max(rng.next(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

/** dim is not known to the injector: infer it from nTokens */
const dimOf = (x: Float32Array, ctx: FaultStepContext) => x.length / Math.max(1, ctx.nTokens);

function addNoise(x: Float32Array, ctx: FaultStepContext, std: number, rng: Rng): Float32Array {
  const dim = dimOf(x, ctx);
  const out = new Float32Array(x.length);
  for (let t = 0; t < ctx.nTokens; t++) {
    const scale = std * rowRms(x, dim, t);
    for (let i = t * dim; i < (t + 1) * dim; i++) out[i] = x[i]! + scale * gaussian(rng);
  }
  return out;
}

registerFaultKind('noise', ':', {
  syntax: 'noise:STD[@N]',
  description: 'adds Gaussian noise of STD (relative to each row’s RMS) to every output (dishonest)',
  create(arg, spec): DishonestBehaviour {
    const { value, onset } = parseOnset(arg, spec);
    const std = Number(value);
    if (!(std > 0 && std <= 100)) throw new FaultSpecError(`fault "${spec}": STD must be a number in (0, 100], got "${value}"`);
    const rng = new Rng(0x6e6f6973);
    return { spec, transformOutput: (x, ctx) => (ctx.nodeStep >= onset ? addNoise(x, ctx, std, rng) : x) };
  },
});

registerFaultKind('zeros', '@', {
  syntax: 'zeros[@N]',
  description: 'sends all-zero activations (dishonest)',
  create(arg, spec): DishonestBehaviour {
    const onset = noArg(arg, spec);
    return { spec, transformOutput: (x, ctx) => (ctx.nodeStep >= onset ? new Float32Array(x.length) : x) };
  },
});

registerFaultKind('skip-layer', '@', {
  syntax: 'skip-layer[@N]',
  description: 'skips its layers and passes its input on (dishonest)',
  create(arg, spec): DishonestBehaviour {
    const onset = noArg(arg, spec);
    return {
      spec,
      transformOutput: (x, ctx) => {
        if (ctx.nodeStep < onset) return x;
        const inp = stepInputs.get(`${ctx.sessionId}|${ctx.step}`);
        return inp && inp.length === x.length ? Float32Array.from(inp) : x;
      },
    };
  },
});

registerFaultKind('wrong-weights', ':', {
  syntax: 'wrong-weights:SEED[@N]',
  description: 'emulates another seed’s weights of the same shape: seeded channel gains and mixing (dishonest)',
  create(arg, spec): DishonestBehaviour {
    const { value, onset } = parseOnset(arg, spec);
    if (!/^\d+$/.test(value)) throw new FaultSpecError(`fault "${spec}": SEED must be a non-negative integer, got "${value}"`);
    const seed = Number(value);
    let gains: Float32Array | undefined;
    let mix: Float32Array | undefined;
    return {
      spec,
      transformOutput: (x, ctx) => {
        if (ctx.nodeStep < onset) return x;
        const dim = dimOf(x, ctx);
        if (!gains || gains.length !== dim) {
          const rng = new Rng(seed);
          gains = Float32Array.from({ length: dim }, () => 0.5 + rng.next());
          mix = Float32Array.from({ length: dim }, () => rng.next() - 0.5);
        }
        const out = new Float32Array(x.length);
        for (let t = 0; t < ctx.nTokens; t++)
          for (let c = 0; c < dim; c++) out[t * dim + c] = gains[c]! * x[t * dim + c]! + mix![c]! * x[t * dim + ((c + 1) % dim)]!;
        return out;
      },
    };
  },
});

registerFaultKind('stale', '@', {
  syntax: 'stale[@N]',
  description: 'replays its previous output of the same shape in the session (dishonest)',
  create(arg, spec): DishonestBehaviour {
    const onset = noArg(arg, spec);
    const last = new Map<string, Float32Array>();
    return {
      spec,
      transformOutput: (x, ctx) => {
        const key = `${ctx.sessionId}|${x.length}`;
        const prev = last.get(key);
        last.set(key, Float32Array.from(x));
        if (last.size > 256) last.delete(last.keys().next().value as string);
        return ctx.nodeStep >= onset && prev ? Float32Array.from(prev) : x;
      },
    };
  },
});

registerFaultKind('equivocate', '@', {
  syntax: 'equivocate[@N]',
  description: 'sends one signed output downstream and another to auditors for the same step (dishonest)',
  create(arg, spec): DishonestBehaviour {
    const onset = noArg(arg, spec);
    const honest = new Map<string, Float32Array>();
    const rng = new Rng(0x65717569);
    return {
      spec,
      transformOutput: (x, ctx) => {
        if (ctx.nodeStep < onset) return x;
        honest.set(`${ctx.sessionId}|${ctx.step}`, Float32Array.from(x));
        if (honest.size > 256) honest.delete(honest.keys().next().value as string);
        return addNoise(x, ctx, 0.05, rng);
      },
      accountability: { equivocated: (sid, step) => honest.get(`${sid}|${step}`) },
    };
  },
});

registerFaultKind('forge', '@', {
  syntax: 'forge[@N]',
  description: 'signs its receipts with a corrupted signature (dishonest)',
  create(arg, spec): DishonestBehaviour {
    const onset = noArg(arg, spec);
    const active = new Set<string>();
    return {
      spec,
      transformOutput: (x, ctx) => {
        if (ctx.nodeStep >= onset) {
          active.add(`${ctx.sessionId}|${ctx.step}`);
          if (active.size > 256) active.delete(active.keys().next().value as string);
        }
        return x;
      },
      accountability: { forge: (sid, step) => active.has(`${sid}|${step}`) },
    };
  },
});

/** names of the dishonest kinds (help texts, demo validation) */
export const DISHONEST_KINDS = ['noise', 'zeros', 'skip-layer', 'wrong-weights', 'stale', 'equivocate', 'forge'] as const;
