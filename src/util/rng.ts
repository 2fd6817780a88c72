// The project's one seeded PRNG (xoshiro128**, seeded through splitmix32): sampling, route
// tie-breaking, fault timing and generated test data are reproducible across machines and
// Node versions, which Math.random is not (neither seedable nor specified).

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** seed: any integer (non-integers are truncated; values beyond 2^53 lose their low bits) */
  constructor(readonly seed: number) {
    // fold the seed's high and low 32 bits so seeds above 2^32 stay distinct
    const lo = seed >>> 0;
    const hi = Math.floor(Math.abs(seed) / 0x100000000) >>> 0;
    const st = { s: (lo ^ Math.imul(hi, 0x27d4eb2d)) | 0 };
    this.a = splitmix32(st);
    this.b = splitmix32(st);
    this.c = splitmix32(st);
    this.d = splitmix32(st);
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1; // all-zero state is a fixed point
  }

  /** next 32-bit unsigned integer */
  nextU32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** uniform double in [0, 1) with 53 random bits */
  next(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** the generator's position, to come back to with rewind() (a draw that must be made again) */
  mark(): readonly [number, number, number, number] {
    return [this.a, this.b, this.c, this.d];
  }

  rewind(m: readonly [number, number, number, number]): void {
    [this.a, this.b, this.c, this.d] = m;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** the same generator as a plain `() => number` in [0, 1), for code that takes a random source */
export function seededUniform(seed: number): () => number {
  const rng = new Rng(seed);
  return () => rng.next();
}

/** a fresh random seed (for requests that give none); 32-bit so it is easy to echo back */
export function randomSeed(): number {
  return Math.floor(Math.random() * 0x100000000);
}
