// Evidence of misbehaviour and the queue that carries it from the data path to whoever
// settles it (the ledger). The data path must never wait on settlement, so enqueue is a
// synchronous O(1) ring-buffer write; a consumer drains asynchronously; on overflow the
// oldest item is dropped and counted.

import type { Hex } from './eip712.js';
import type { CustodyCode } from '../checks/custody.js';
import type { SignedReceipt, SignedVerdict } from './receipts.js';

/** Two validly signed receipts from one signer for one slot with different outputs. Self-proving. */
export interface EquivocationEvidence {
  kind: 'equivocation';
  signer: Hex;
  slot: { requestId: Hex; sessionId: Hex; step: number; layerStart: number; layerEnd: number };
  a: SignedReceipt;
  b: SignedReceipt;
  /** both receipts claim the same input: no honest explanation at all */
  sameInput: boolean;
  detectedAt: number;
}

/** A custody fault pinned by signed receipts (e.g. a hop signed an input nobody sent). */
export interface CustodyEvidence {
  kind: 'custody';
  code: CustodyCode;
  /** signer the receipts incriminate, when one can be named */
  blame?: Hex;
  reason: string;
  receipts: SignedReceipt[];
  detectedAt: number;
}

/** Re-execution disagreed beyond the calibrated tolerance: needs a quorum of verdicts to slash. */
export interface AuditEvidence {
  kind: 'audit';
  receipt: SignedReceipt;
  /** set when `receipt` is a peer auditor's ReexecutionReceipt (the verdicts' receiptHash is that type's digest) */
  receiptType?: 'ReexecutionReceipt';
  verdicts: SignedVerdict[];
  detectedAt: number;
}

export type Evidence = EquivocationEvidence | CustodyEvidence | AuditEvidence;

export interface EvidenceQueueStats {
  enqueued: number;
  /** dropped on overflow (oldest first) */
  dropped: number;
  consumed: number;
  /** consumer threw or rejected */
  failed: number;
  size: number;
}

export class EvidenceQueue<T = Evidence> {
  private readonly buf: (T | undefined)[];
  private head = 0; // index of the oldest item
  private count = 0;
  private enqueued = 0;
  private dropped = 0;
  private consumed = 0;
  private failed = 0;
  private wake: (() => void) | undefined;
  private running: Promise<void> | undefined;
  private stopping = false;
  private busy = false;
  private idleWaiters: (() => void)[] = [];

  constructor(readonly capacity = 1024) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('EvidenceQueue capacity must be a positive integer');
    this.buf = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  stats(): EvidenceQueueStats {
    return { enqueued: this.enqueued, dropped: this.dropped, consumed: this.consumed, failed: this.failed, size: this.count };
  }

  /** Never blocks or throws for a full queue: the oldest item gives way. */
  enqueue(item: T): void {
    this.enqueued++;
    if (this.count === this.capacity) {
      this.buf[this.head] = undefined;
      this.head = (this.head + 1) % this.capacity;
      this.count--;
      this.dropped++;
    }
    this.buf[(this.head + this.count) % this.capacity] = item;
    this.count++;
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Removes and returns the oldest item (synchronous; undefined when empty). */
  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.buf[this.head];
    this.buf[this.head] = undefined;
    this.head = (this.head + 1) % this.capacity;
    this.count--;
    return item;
  }

  /**
   * Starts draining into `consumer`, one item at a time. Errors are counted and passed to
   * `onError`; the loop goes on. Only one consumer at a time.
   */
  start(consumer: (item: T) => void | Promise<void>, onError?: (err: unknown, item: T) => void): void {
    if (this.running) throw new Error('EvidenceQueue already has a consumer');
    this.stopping = false;
    this.running = (async () => {
      for (;;) {
        if (this.stopping) break;
        const item = this.shift();
        if (item === undefined) {
          this.notifyIdle();
          await new Promise<void>((r) => (this.wake = r));
          continue;
        }
        this.busy = true;
        try {
          await consumer(item);
          this.consumed++;
        } catch (e) {
          this.failed++;
          try {
            onError?.(e, item);
          } catch {
            /* an error handler must not kill the drain loop */
          }
        } finally {
          this.busy = false;
        }
      }
    })();
  }

  /** Resolves once the queue is empty and the consumer is between items. */
  idle(): Promise<void> {
    if (this.count === 0 && !this.busy) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Stops the consumer after its current item; queued items stay queued. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.stopping = true;
    const w = this.wake;
    this.wake = undefined;
    w?.();
    await this.running;
    this.running = undefined;
    this.notifyIdle();
  }

  private notifyIdle(): void {
    if (this.count !== 0 || this.busy) return;
    const ws = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of ws) w();
  }
}
