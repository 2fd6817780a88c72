// Dishonest node behaviours for tests and demos. Every kind takes an optional onset `@N`:
// honest for the node's first N steps (all sessions), dishonest from then on.
//
//   noise:STD[@N]        adds Gaussian noise of STD × the row's RMS to every output value
//   zeros[@N]            sends all-zero activations
//   nan[@N]              sends activations holding a NaN (every receiver refuses them)
//   skip-layer[@N]       skips its layers: sends its input on unchanged (exactly one skipped
//                        layer on a one-layer range)
//   wrong-weights[:SEED][@N]  emulates weights of another seed of the same shape: a seeded
//                        per-channel gain and channel mixing applied to the honest output
//   stale[@N]            replays its previous output of the same shape in this session
//   equivocate[@N]       sends a noised output downstream but answers an auditor with the
//                        honest one, each under its own signed receipt for the same step
//   forge[@N]            signs its receipts with a corrupted signature
//   frame[@N]            fails its steps, each with an ERROR forged in its route neighbour's
//                        name (the next hop, or the previous one at the last hop) that blames
//                        that neighbour; the forged signature does not verify
//   accuse[@N]           fails its steps, each with an ERROR it signs itself that blames its
//                        route neighbour (the hop before it for its input; hop 0 the next hop
//                        for its reply): a valid accusation the gateway cannot check
//   drop[@N]             silently drops the outputs of running sessions (every step past
//                        position 0) and all that session's outputs and receipts after, while
//                        it opens sessions, answers pings and serves fresh sessions' first
//                        steps (the gateway's probes) as before: a selective staller
//
// Output rewrites act on every forward of the stage, audit re-executions included (a
// dishonest node lies when it audits, too; equivocate then has only its noise to give).
// forge and equivocate also wrap the node's stamper (misbehaving-stamper.ts); frame and accuse
// wrap the signer of its ERRORs; drop wraps how its outputs go on (node/executor.ts SendOnward).

import { Rng } from '../util/rng.js';
import { MsgType, type ErrorHeader, type OpenHeader } from '../protocol/messages.js';
import { FaultSpecError, type FaultKind, type Misbehaviour, type StepView } from './fault-kind.js';
import type { ErrorSigner } from '../protocol/error-signature.js';
import { EquivocatingStamper, ForgingStamper } from './misbehaving-stamper.js';

function parseOnset(arg: string, spec: string): { value: string; onset: number } {
  const at = arg.lastIndexOf('@');
  const value = at >= 0 ? arg.slice(0, at) : arg;
  const o = at >= 0 ? arg.slice(at + 1) : '0';
  if (!/^\d+$/.test(o)) throw new FaultSpecError(`fault "${spec}": onset after @ must be a non-negative integer, got "${o}"`);
  return { value, onset: Number(o) };
}

function noArg(arg: string, spec: string): number {
  // sep '@': "zeros" → '', "zeros@3" → '3'
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

const dimOf = (x: Float32Array, v: StepView) => x.length / Math.max(1, v.nTokens);

function addNoise(x: Float32Array, v: StepView, std: number, rng: Rng): Float32Array {
  const dim = dimOf(x, v);
  const out = new Float32Array(x.length);
  for (let t = 0; t < v.nTokens; t++) {
    const scale = std * rowRms(x, dim, t);
    for (let i = t * dim; i < (t + 1) * dim; i++) out[i] = x[i]! + scale * gaussian(rng);
  }
  return out;
}

/** a copy of `x` whose first value is NaN */
function withNaN(x: Float32Array): Float32Array {
  const out = Float32Array.from(x);
  out[0] = NaN;
  return out;
}

/**
 * An ERROR that claims to come from this hop's neighbour on the route (the next hop, or the
 * previous one at the last hop) and blames it, under a signature that is not its: what a lying
 * relay would make up. Undefined on a one-hop route (no neighbour to frame).
 */
function framed(h: ErrorHeader, open: OpenHeader): ErrorHeader | undefined {
  const victim = open.hop + 1 < open.route.length ? open.hop + 1 : open.hop - 1;
  const peerId = open.route[victim]?.peerId;
  if (peerId === undefined) return undefined;
  return {
    code: 'engine',
    reason: `the stage of ${peerId} failed`,
    peerId,
    sessionId: h.sessionId,
    ...(h.requestId !== undefined ? { requestId: h.requestId } : {}),
    hop: victim,
    from: peerId,
    signature: 'ab'.repeat(64),
  };
}

/**
 * An ERROR in this hop's own name that blames its neighbour on the route (the previous hop for
 * bad input; hop 0, whose previous hop is the owner, the next hop for a malformed reply):
 * what a hop lying about its neighbour signs. Undefined on a one-hop route.
 */
function accusing(h: ErrorHeader, open: OpenHeader): ErrorHeader | undefined {
  const back = open.hop > 0;
  const peerId = open.route[back ? open.hop - 1 : open.hop + 1]?.peerId;
  if (peerId === undefined) return undefined;
  const { from: _f, signature: _s, ...rest } = h;
  const reason = back ? `hidden states from ${peerId} are not finite` : `${peerId} sent a malformed reply`;
  return { ...rest, code: 'bad_message', reason, peerId };
}

/** A behaviour that refuses every step from its onset on, its ERRORs from then on signed by `lie(inner)`. */
function refusingWith(kind: string, arg: string, spec: string, lie: (inner: ErrorSigner) => ErrorSigner): Misbehaviour {
  const onset = noArg(arg, spec);
  let lying = false;
  return {
    spec,
    before: (v) => {
      if (v.nodeStep < onset) return 'proceed';
      lying = true;
      throw new Error(`${kind}: step refused`);
    },
    errors: (inner) => {
      const lied = lie(inner);
      return (h, open) => (lying ? lied(h, open) : inner(h, open));
    },
  };
}

/** Remembers at most `max` entries, oldest dropped first. */
function bounded<V>(map: Map<string, V>, key: string, value: V, max = 256): void {
  map.set(key, value);
  if (map.size > max) map.delete(map.keys().next().value as string);
}

export const DISHONEST_KINDS: Record<string, FaultKind> = {
  noise: {
    sep: ':',
    syntax: 'noise:STD[@N]',
    description: 'adds Gaussian noise of STD (relative to each row’s RMS) to every output (dishonest)',
    create(arg, spec) {
      const { value, onset } = parseOnset(arg, spec);
      const std = Number(value);
      if (!(std > 0 && std <= 100)) throw new FaultSpecError(`fault "${spec}": STD must be a number in (0, 100], got "${value}"`);
      const rng = new Rng(0x6e6f6973);
      return { spec, rewrite: (x, v) => (v.nodeStep >= onset ? addNoise(x, v, std, rng) : x) };
    },
  },
  nan: {
    sep: '@',
    syntax: 'nan[@N]',
    description: 'sends activations holding a NaN, which every receiver refuses (dishonest)',
    create(arg, spec) {
      const onset = noArg(arg, spec);
      return { spec, rewrite: (x, v) => (v.nodeStep >= onset ? withNaN(x) : x) };
    },
  },
  zeros: {
    sep: '@',
    syntax: 'zeros[@N]',
    description: 'sends all-zero activations (dishonest)',
    create(arg, spec) {
      const onset = noArg(arg, spec);
      return { spec, rewrite: (x, v) => (v.nodeStep >= onset ? new Float32Array(x.length) : x) };
    },
  },
  'skip-layer': {
    sep: '@',
    syntax: 'skip-layer[@N]',
    description: 'skips its layers and passes its input on (dishonest)',
    create(arg, spec) {
      const onset = noArg(arg, spec);
      return {
        spec,
        rewrite: (x, v) => (v.nodeStep >= onset && v.input.length === x.length ? Float32Array.from(v.input) : x),
      };
    },
  },
  'wrong-weights': {
    sep: ':',
    syntax: 'wrong-weights:SEED[@N]',
    description: 'emulates another seed’s weights of the same shape: seeded channel gains and mixing (dishonest)',
    create(arg, spec) {
      const { value, onset } = parseOnset(arg, spec);
      if (!/^\d+$/.test(value)) throw new FaultSpecError(`fault "${spec}": SEED must be a non-negative integer, got "${value}"`);
      const seed = Number(value);
      let gains: Float32Array | undefined;
      let mix: Float32Array | undefined;
      return {
        spec,
        rewrite: (x, v) => {
          if (v.nodeStep < onset) return x;
          const dim = dimOf(x, v);
          if (!gains || gains.length !== dim) {
            const rng = new Rng(seed);
            gains = Float32Array.from({ length: dim }, () => 0.5 + rng.next());
            mix = Float32Array.from({ length: dim }, () => rng.next() - 0.5);
          }
          const out = new Float32Array(x.length);
          for (let t = 0; t < v.nTokens; t++)
            for (let c = 0; c < dim; c++) out[t * dim + c] = gains[c]! * x[t * dim + c]! + mix![c]! * x[t * dim + ((c + 1) % dim)]!;
          return out;
        },
      };
    },
  },
  stale: {
    sep: '@',
    syntax: 'stale[@N]',
    description: 'replays its previous output of the same shape in the session (dishonest)',
    create(arg, spec) {
      const onset = noArg(arg, spec);
      const last = new Map<string, Float32Array>();
      return {
        spec,
        rewrite: (x, v) => {
          const key = `${v.sessionId}|${x.length}`;
          const prev = last.get(key);
          bounded(last, key, Float32Array.from(x));
          return v.nodeStep >= onset && prev ? Float32Array.from(prev) : x;
        },
      };
    },
  },
  equivocate: {
    sep: '@',
    syntax: 'equivocate[@N]',
    description: 'sends one signed output downstream and another to auditors for the same step (dishonest)',
    create(arg, spec) {
      const onset = noArg(arg, spec);
      /** honest outputs of the dishonest steps, by `${sessionId}|${pos}` */
      const honest = new Map<string, Float32Array>();
      const rng = new Rng(0x65717569);
      return {
        spec,
        rewrite: (x, v) => {
          if (v.nodeStep < onset) return x;
          bounded(honest, `${v.sessionId}|${v.pos}`, Float32Array.from(x));
          return addNoise(x, v, 0.05, rng);
        },
        stamper: (inner, ctx) => new EquivocatingStamper(inner, ctx, (sessionId, pos) => honest.get(`${sessionId}|${pos}`)),
      };
    },
  },
  frame: {
    sep: '@',
    syntax: 'frame[@N]',
    description: 'fails its steps with ERRORs forged in its route neighbour’s name, blaming that neighbour (dishonest)',
    create: (arg, spec) => refusingWith('frame', arg, spec, (inner) => (h, open) => (open && framed(h, open)) || inner(h, open)),
  },
  accuse: {
    sep: '@',
    syntax: 'accuse[@N]',
    description: 'fails its steps with ERRORs it signs itself, blaming its route neighbour (dishonest)',
    create: (arg, spec) => refusingWith('accuse', arg, spec, (inner) => (h, open) => inner((open && accusing(h, open)) || h, open)),
  },
  drop: {
    sep: '@',
    syntax: 'drop[@N]',
    description: 'silently drops running sessions’ outputs (steps past position 0), still answering pings and probes (dishonest)',
    create(arg, spec) {
      const onset = noArg(arg, spec);
      /** outputs sent so far (onsets count these) */
      let outputs = 0;
      /** sessions whose outputs and receipts go nowhere from their first dropped step on */
      const dropped = new Map<string, true>();
      return {
        spec,
        onward: (inner) => (to, m) => {
          if (m.type === MsgType.STEP || m.type === MsgType.RESULT) {
            if (outputs++ >= onset && m.header.pos > 0) bounded(dropped, m.header.sessionId, true);
          }
          const sid = m.type === MsgType.STEP || m.type === MsgType.RESULT || m.type === MsgType.RECEIPTS ? m.header.sessionId : undefined;
          return sid !== undefined && dropped.has(sid) ? Promise.resolve() : inner(to, m);
        },
      };
    },
  },
  forge: {
    sep: '@',
    syntax: 'forge[@N]',
    description: 'signs its receipts with a corrupted signature (dishonest)',
    create(arg, spec) {
      const onset = noArg(arg, spec);
      return { spec, stamper: (inner) => new ForgingStamper(inner, onset) };
    },
  },
};
