// The lane buffers of the ORT engine's batched attention (./batch-layout.ts): per layer, K as
// [KVH, L, D, C] and V as [KVH, L, C, D], lane j holding one session's cache. They are kept from
// batch to batch, and so is what they hold: while a batch has the same sessions as the last one
// (in any order) and its longest cache still fits, each lane only takes the positions its
// session gained since (one per decode step), not its whole cache again. Otherwise the lanes are
// laid out anew with headroom, every lane's unused slots zeroed, so no slot ever holds another
// session's values. Fresh buffers for every batch cost a page fault per 4 KiB; a full copy per
// batch cost more than the attention it feeds at 1024 positions.

/** a session's std-path cache as the runner stores it: K [KVH, D, cap], V [KVH, cap, D] per layer */
export interface LaneCache {
  cap: number;
  k: Float32Array[];
  v: Float32Array[];
}

export interface LaneDims {
  layers: number;
  kvHeads: number;
  headDim: number;
}

export interface FilledLanes {
  /** slots per lane */
  C: number;
  /** the lane of each cache passed to fill() */
  laneOf: number[];
  /** per layer, exactly [KVH, L, D, C] and [KVH, L, C, D] */
  k: Float32Array[];
  v: Float32Array[];
  /** positions copied into the lanes by this fill, over all sessions (one layer's worth) */
  copied: number;
}

/** the share of a stage's KV budget its lanes may always take (they also get what the caches leave) */
export const LANE_SHARE = 0.2;

/** slots a new layout leaves beyond the longest cache, at least (rounded up to a multiple) */
const HEADROOM = 16;
const ROUND = 32;

/** the slots per lane a new layout gives caches of at most `need` positions */
export function laneWidth(need: number): number {
  return Math.ceil((Math.max(1, need) + HEADROOM) / ROUND) * ROUND;
}

export class LaneBuffers {
  private held: { cache: LaneCache; n: number }[] = [];
  private C = 0;
  private bufK: Float32Array[] = [];
  private bufV: Float32Array[] = [];

  constructor(private readonly dims: LaneDims) {}

  /**
   * lays the first pos[b] positions of caches[b] into the lanes, whose buffers hold at most
   * `maxSlots` slots (lanes × slots per lane; the lane budget now): buffers kept from before
   * that are bigger are let go first
   */
  fill(caches: LaneCache[], pos: number[], maxSlots = Infinity): FilledLanes {
    const L = caches.length;
    const need = Math.max(1, ...pos);
    const most = this.trim(maxSlots);
    const laneOf = this.reuse(caches, need);
    let copied = 0;
    if (laneOf) {
      caches.forEach((c, b) => {
        const rec = this.held[laneOf[b]!]!;
        if (rec.n < pos[b]!) copied += this.copy(c, laneOf[b]!, rec.n, pos[b]!);
        rec.n = pos[b]!;
      });
    } else {
      this.C = laneWidth(need);
      this.held = caches.map((cache, b) => ({ cache, n: pos[b]! }));
      this.allocate(L, most);
      caches.forEach((c, b) => {
        copied += this.copy(c, b, 0, pos[b]!);
        this.zeroFrom(b, pos[b]!);
      });
    }
    const size = this.size(L);
    return {
      C: this.C,
      laneOf: laneOf ?? caches.map((_, b) => b),
      k: this.bufK.map((x) => x.subarray(0, size)),
      v: this.bufV.map((x) => x.subarray(0, size)),
      copied,
    };
  }

  /** positions from n on of this cache no longer hold what a lane copied (a truncation) */
  forget(cache: LaneCache, n: number): void {
    for (const rec of this.held) if (rec.cache === cache) rec.n = Math.min(rec.n, n);
  }

  /** a closed session: the lanes stop referring to its cache (the next batch lays them out anew) */
  drop(cache: LaneCache): void {
    if (this.held.some((r) => r.cache === cache)) {
      this.held = [];
      this.C = 0;
    }
  }

  /** lets the buffers go if they hold more than `maxSlots` slots (the lane budget shrank); returns the floats a buffer may hold */
  trim(maxSlots: number): number {
    const most = this.dims.kvHeads * this.dims.headDim * maxSlots;
    if (this.bufK.some((b) => b.length > most)) this.clear();
    return most;
  }

  /** drops the buffers and what they held */
  clear(): void {
    this.held = [];
    this.C = 0;
    this.bufK = [];
    this.bufV = [];
  }

  /** the lanes of the held layout for these caches, if they are exactly its sessions and fit */
  private reuse(caches: LaneCache[], need: number): number[] | undefined {
    if (caches.length !== this.held.length || need > this.C) return undefined;
    const lane = new Map(this.held.map((r, j) => [r.cache, j]));
    const laneOf = caches.map((c) => lane.get(c));
    if (laneOf.some((j) => j === undefined) || new Set(laneOf).size !== caches.length) return undefined;
    return laneOf as number[];
  }

  private size(L: number): number {
    return this.dims.kvHeads * L * this.dims.headDim * this.C;
  }

  /** buffers of at least size(L) floats, kept unless over 4× too big; never over `most` */
  private allocate(L: number, most: number): void {
    const size = this.size(L);
    if (size > most) {
      const slots = most / (this.dims.kvHeads * this.dims.headDim);
      throw new Error(`${L} lanes of ${this.C} slots exceed the lane budget of ${slots} slots`);
    }
    for (let l = 0; l < this.dims.layers; l++) {
      const cur = this.bufK[l];
      if (cur && cur.length >= size && cur.length <= 4 * size) continue;
      const n = Math.min(Math.ceil(size * 1.25), most);
      this.bufK[l] = new Float32Array(n);
      this.bufV[l] = new Float32Array(n);
    }
  }

  /** copies positions [from, to) of a cache into lane j; returns to − from */
  private copy(c: LaneCache, j: number, from: number, to: number): number {
    const { layers, kvHeads: KVH, headDim: D } = this.dims;
    const L = this.held.length;
    const C = this.C;
    const n = to - from;
    if (n <= 0) return 0;
    for (let l = 0; l < layers; l++) {
      const k = this.bufK[l]!;
      const v = this.bufV[l]!;
      const sk = c.k[l]!;
      const sv = c.v[l]!;
      for (let h = 0; h < KVH; h++) {
        const lane = h * L + j;
        for (let d = 0; d < D; d++) {
          const src = (h * D + d) * c.cap;
          const dst = (lane * D + d) * C;
          // a few positions (a decode step's): element by element beats a subarray per row
          if (n > 32) k.set(sk.subarray(src + from, src + to), dst + from);
          else for (let p = from; p < to; p++) k[dst + p] = sk[src + p]!;
        }
        v.set(sv.subarray((h * c.cap + from) * D, (h * c.cap + to) * D), (lane * C + from) * D);
      }
    }
    return n;
  }

  /** zeroes lane j's slots from `from` on */
  private zeroFrom(j: number, from: number): void {
    const { layers, kvHeads: KVH, headDim: D } = this.dims;
    const L = this.held.length;
    const C = this.C;
    for (let l = 0; l < layers; l++) {
      const k = this.bufK[l]!;
      const v = this.bufV[l]!;
      for (let h = 0; h < KVH; h++) {
        const lane = h * L + j;
        for (let d = 0; d < D; d++) k.fill(0, (lane * D + d) * C + from, (lane * D + d + 1) * C);
        v.fill(0, (lane * C + from) * D, (lane + 1) * C * D);
      }
    }
  }
}
