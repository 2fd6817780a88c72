// Signature work off the token path's thread. A node's reference engine computes on the main
// thread, so the upstream receipt check (≈ 0.4 ms per recover with the WASM or JS secp256k1)
// would add to every step's latency; run on one worker thread it overlaps the compute. With
// libsecp256k1's native addon a whole check on the calling thread takes ≈ 0.1 ms of CPU, less
// than one through the worker (≈ 0.22 ms of CPU, 0.23 ms of wall time on the development VM:
// bench/receipt-check), so there the check runs on the calling thread — after the I/O of the
// tick that asked for it (setImmediate), so an output sent in that tick leaves first, as it
// does with the worker.
// Falls back to the calling thread when a worker cannot start or dies (same results:
// the worker runs the same functions). Whether to use a worker at all is decided once, at
// start-up, by whoever constructs the pool (the node CLI: ODSI_CRYPTO_WORKER, `useCryptoWorker`).
import { Worker } from 'node:worker_threads';
import { bytesToHex } from '@noble/hashes/utils.js';
import { ZERO_HASH, assertWellFormed, typedDigestBytes, type Hex, type OdsiDomain, type PrimaryType, type RecordOf } from './eip712.js';
import { checkSigned, signDigest, type VerifyResult } from './receipts.js';
import { ecdsa, type BackendName } from '../../identity/ecdsa.js';

type Pending = { resolve(v: unknown): void; reject(e: Error): void };
/** one job's answer from the worker */
export type CryptoReply = { id: number; result?: unknown; error?: string };

/**
 * The ODSI_CRYPTO_WORKER setting: '1' a worker thread, '0' the calling thread, unset or 'auto' a
 * worker unless the signature backend is the native addon (whose recover costs less than the
 * round trip to a worker). Anything else is an error.
 */
export function useCryptoWorker(setting: string | undefined, backend: BackendName): boolean {
  if (setting === '1') return true;
  if (setting === '0') return false;
  if (setting === undefined || setting === '' || setting === 'auto') return backend !== 'native';
  throw new Error(`ODSI_CRYPTO_WORKER must be auto, 1 or 0, got ${JSON.stringify(setting)}`);
}

export interface CryptoPoolOptions {
  /** false: do everything on the calling thread (no worker thread is ever started) */
  worker: boolean;
}

export class CryptoPool {
  private worker?: Worker;
  private failed = false;
  private next = 1;
  private readonly pending = new Map<number, Pending>();
  /** jobs of this tick not yet posted: they go to the worker as one message (one clone, one wake-up) */
  private outbox: Record<string, unknown>[] = [];

  constructor(private readonly o: CryptoPoolOptions) {}

  private get(): Worker | undefined {
    if (this.failed || !this.o.worker) return undefined;
    if (!this.worker) {
      try {
        const w = new Worker(new URL('./crypto-worker.js', import.meta.url), { workerData: { ecdsa: ecdsa().name } });
        w.unref(); // never keeps a process alive
        w.on('message', (replies: CryptoReply[]) => {
          for (const m of replies) {
            const p = this.pending.get(m.id);
            if (!p) continue;
            this.pending.delete(m.id);
            if (m.error !== undefined) p.reject(new Error(m.error));
            else p.resolve(m.result);
          }
          if (this.pending.size === 0) this.worker?.unref();
        });
        const die = (e: Error) => {
          this.failed = true;
          this.worker = undefined;
          for (const p of this.pending.values()) p.reject(e);
          this.pending.clear();
        };
        w.on('error', die);
        w.on('exit', (code) => die(new Error(`crypto worker exited (${code})`)));
        this.worker = w;
      } catch {
        this.failed = true;
        return undefined;
      }
    }
    return this.worker;
  }

  private run<T>(job: Record<string, unknown>): Promise<T> | undefined {
    const w = this.get();
    if (!w) return undefined;
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      job.id = id;
      // the jobs of one tick (several sessions' steps) travel as one message
      if (this.outbox.push(job) === 1) queueMicrotask(() => this.flush());
    });
  }

  private flush(): void {
    const jobs = this.outbox;
    this.outbox = [];
    const w = this.worker;
    if (!w) return this.fail(jobs, new Error('crypto worker gone'));
    w.ref(); // while a job is out, wait for it
    try {
      w.postMessage(jobs);
    } catch (e) {
      // a job that cannot be cloned fails alone: its caller does it on this thread
      this.fail(jobs, e as Error);
    }
  }

  private fail(jobs: Record<string, unknown>[], err: Error): void {
    for (const j of jobs) {
      const p = this.pending.get(j.id as number);
      this.pending.delete(j.id as number);
      p?.reject(err);
    }
  }

  /** checkSigned on the worker (or here). */
  async verify(primary: PrimaryType, signed: unknown, domain: OdsiDomain): Promise<VerifyResult> {
    const p = this.run<VerifyResult>({ op: 'verify', primary, signed, domain, id: 0 });
    if (p) {
      try {
        return await p;
      } catch {
        /* worker gone: do it here */
      }
    } else {
      // on this thread: after this tick's I/O, so an output sent in the same tick is not held back
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return checkSigned(primary, signed, domain);
  }

  /** EIP-712 digest and signature of a well-formed record, on the worker (or here). Throws for a malformed record. */
  async sign<P extends PrimaryType>(
    primary: P,
    record: RecordOf<P>,
    secret: Uint8Array,
    domain: OdsiDomain,
  ): Promise<{ digest: Hex; signature: Hex }> {
    assertWellFormed(primary, record);
    const p = this.run<{ digest: Hex; signature: Hex }>({ op: 'sign', primary, record, secret, domain, id: 0 });
    if (p) {
      try {
        return await p;
      } catch {
        /* worker gone: do it here */
      }
    }
    const d = typedDigestBytes(primary, record, domain);
    return { digest: `0x${bytesToHex(d)}`, signature: signDigest(d, secret) };
  }

  /**
   * Start the worker and load its crypto (module graph, WASM) now, so a node's first step does
   * not pay for it inside its deadline. Bounded; never rejects.
   */
  async warm(identity: { address: Hex; secret: Uint8Array }, domain: OdsiDomain, timeoutMs = 10_000): Promise<void> {
    const record = {
      requestId: ZERO_HASH,
      sessionId: ZERO_HASH,
      step: 0,
      pos: 0,
      nTokens: 1,
      layerStart: 0,
      layerEnd: 1,
      modelId: ZERO_HASH,
      profile: 'warm-up',
      inputHash: ZERO_HASH,
      budgetUs: 0,
      signer: identity.address,
    };
    const work = (async () => {
      const { signature } = await this.sign('ExecutionCommitment', record, identity.secret, domain);
      await this.verify('ExecutionCommitment', { record, signature }, domain);
    })().catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([work, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
  }
}
