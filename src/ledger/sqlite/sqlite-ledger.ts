// The embedded ledger: one SQLite file (better-sqlite3, WAL) holding
//   events  the append-only, hash-chained log of signed events (triggers refuse UPDATE/DELETE);
//   state   rows derived from the log by state.ts apply(), written in the same transaction as
//           the event they follow from (tbl ∈ identities, wallets, accounts, evidence, disputes,
//           nonces, globals; values are JSON);
//   meta    the verified-prefix checkpoint and, when the ledger made its own operator key, that key.
// Every write is one IMMEDIATE transaction: catch up with events other processes appended, sign
// the event with the submitter's key, apply it to the in-memory state, append it and its rows.
// Stake, slash and payment events commit with synchronous=FULL (fsync before the call returns);
// registrations and reputation with NORMAL (WAL: durable across a process crash, not a power cut).
// On open the log is replayed and checked against the rows (signatures re-verified after the
// checkpoint); verify() re-checks everything from genesis.

import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { DEV_CHAIN_ID, ZERO_HASH, type Hex } from '../../accountability/records/eip712.js';
import type { Evidence } from '../../accountability/records/evidence.js';
import type { SignedVerdict } from '../../accountability/records/receipts.js';
import { generateIdentity, identityFromSecret } from '../../identity/identity.js';
import {
  reject,
  systemClock,
  type AccountStatus,
  type Address,
  type Clock,
  type EpochBatch,
  type EpochOutcome,
  type EvidenceOutcome,
  type IdentityStatus,
  type Ledger,
  type LedgerResult,
  type LedgerSigner,
  type LedgerStatus,
  type ReputationReport,
  type VerifyReport,
} from '../ledger.js';
import { makeParams, paramsJson, type LedgerParams } from '../rules.js';
import {
  canonicalJson,
  chainHash,
  checkEventSignature,
  DURABLE_KINDS,
  eventDigest,
  GENESIS_PREV,
  signEvent,
  type EventBodies,
  type EventKind,
  type LedgerEvent,
  type SignedEvent,
} from '../events.js';
import {
  accountStatus,
  apply,
  checkInvariants,
  identityStatus,
  keysOf,
  LedgerState,
  rowsOf,
  stateFromRows,
  statusOf,
  TABLES,
  type Table,
} from '../state.js';

export interface SqliteLedgerOptions {
  /** unix seconds; tests pass one they can move */
  clock?: Clock;
  /** used only when the file is created (they are then fixed by the genesis event) */
  params?: Partial<LedgerParams>;
  chainId?: number;
  /**
   * the operator (faucet, authorises gateways). When creating: the genesis is signed by it;
   * without one a key is generated and kept in the file's meta table (an embedded ledger's
   * owner is its operator). When opening: used for faucet deposits if it is the genesis operator.
   */
  operator?: LedgerSigner;
  /** how long a write waits for another process's write lock before it throws (default 10 s) */
  busyTimeoutMs?: number;
  /** open even if the replay disagrees with the stored rows (for `odsi ledger verify` to report) */
  allowInconsistent?: boolean;
}

/** The file failed replay-and-verify on open. */
export class LedgerCorruptError extends Error {
  constructor(readonly problems: string[]) {
    super(`ledger failed verification: ${problems.slice(0, 3).join('; ')}${problems.length > 3 ? ` (+${problems.length - 3} more)` : ''}`);
    this.name = 'LedgerCorruptError';
  }
}

/** an event as large as this is refused (64 receipts of evidence are ~100 KB) */
const MAX_EVENT_BYTES = 512 * 1024;

/** the verified-prefix checkpoint advances every this many events (and on close) */
const CHECKPOINT_EVERY = 1000;

interface EventRow {
  seq: number;
  event: string;
  signature: string;
  hash: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  submitter TEXT NOT NULL,
  nonce INTEGER NOT NULL,
  time INTEGER NOT NULL,
  event TEXT NOT NULL,
  signature TEXT NOT NULL,
  hash TEXT NOT NULL,
  UNIQUE (submitter, nonce)
);
CREATE TRIGGER IF NOT EXISTS events_append_only_u BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_d BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TABLE IF NOT EXISTS state (tbl TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (tbl, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

export class SqliteLedger implements Ledger {
  readonly params: LedgerParams;
  readonly operator: Address;
  private readonly db: Database.Database;
  private readonly clock: Clock;
  private state: LedgerState;
  private seq = 0;
  private head: Hex = GENESIS_PREV;
  private sync: 'FULL' | 'NORMAL' = 'FULL';
  private operatorSigner: LedgerSigner | undefined;
  private closed = false;
  private readonly st: {
    insert: Database.Statement;
    upsert: Database.Statement;
    remove: Database.Statement;
    after: Database.Statement;
  };

  private constructor(
    readonly path: string,
    db: Database.Database,
    o: SqliteLedgerOptions,
  ) {
    this.db = db;
    this.clock = o.clock ?? systemClock;
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma(`busy_timeout = ${Math.max(0, Math.floor(o.busyTimeoutMs ?? 10_000))}`);
    db.exec(SCHEMA);
    this.st = {
      insert: db.prepare('INSERT INTO events (seq, kind, submitter, nonce, time, event, signature, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      upsert: db.prepare(
        'INSERT INTO state (tbl, key, value) VALUES (?, ?, ?) ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value',
      ),
      remove: db.prepare('DELETE FROM state WHERE tbl = ? AND key = ?'),
      after: db.prepare('SELECT seq, event, signature, hash FROM events WHERE seq > ? ORDER BY seq'),
    };
    this.state = new LedgerState();
    const count = (db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n;
    if (count === 0) this.createGenesis(o);
    else {
      const r = this.replay({ full: false });
      if (r.problems.length && !o.allowInconsistent) throw new LedgerCorruptError(r.problems);
      if (!r.problems.length) this.setMeta({ checkpoint_seq: String(this.seq), checkpoint_hash: this.head });
    }
    this.params = this.state.params;
    this.operator = this.state.operator;
    const stored = this.meta('operator_secret');
    const candidate = o.operator ?? (stored ? identityFromSecret(hexToBytes(stored)) : undefined);
    if (candidate && candidate.address.toLowerCase() === this.operator.toLowerCase()) this.operatorSigner = candidate;
  }

  /** Opens (creating if absent) the ledger file at `path`. */
  static open(path: string, o: SqliteLedgerOptions = {}): SqliteLedger {
    const file = resolve(path);
    mkdirSync(dirname(file), { recursive: true });
    const db = new Database(file);
    try {
      return new SqliteLedger(file, db, o);
    } catch (e) {
      db.close();
      throw e;
    }
  }

  // ------------------------------------------------------------ writes

  register(who: LedgerSigner, role: 'node' | 'gateway' = 'node'): Promise<LedgerResult> {
    return this.write(who, 'register', { role });
  }
  authorize(operator: LedgerSigner, gateway: Address): Promise<LedgerResult> {
    return this.write(operator, 'authorize', { gateway });
  }
  mint(operator: LedgerSigner, to: Address, amount: bigint): Promise<LedgerResult> {
    return this.write(operator, 'mint', { to, amount: amountText(amount) });
  }
  stake(who: LedgerSigner, amount: bigint): Promise<LedgerResult<{ stake: bigint }>> {
    return this.write(who, 'stake', { amount: amountText(amount) });
  }
  requestUnstake(who: LedgerSigner, amount: bigint): Promise<LedgerResult<{ releaseAt: number }>> {
    return this.write(who, 'unstake', { amount: amountText(amount) });
  }
  withdraw(who: LedgerSigner, amount?: bigint): Promise<LedgerResult<{ withdrawn: bigint }>> {
    return this.write(who, 'withdraw', amount === undefined ? {} : { amount: amountText(amount) });
  }
  deposit(account: Address, amount: bigint, from?: LedgerSigner): Promise<LedgerResult<{ balance: bigint }>> {
    const signer = from ?? this.operatorSigner;
    if (!signer)
      return Promise.resolve(reject('not_authorized', 'a faucet deposit needs the ledger operator key, which this process does not hold'));
    return this.write(signer, 'deposit', { account, amount: amountText(amount), faucet: from === undefined });
  }
  submitEvidence(submitter: LedgerSigner, evidence: Evidence): Promise<LedgerResult<EvidenceOutcome>> {
    return this.write(submitter, 'evidence', { evidence });
  }
  addVerdicts(submitter: LedgerSigner, disputeId: Hex, verdicts: SignedVerdict[]): Promise<LedgerResult<EvidenceOutcome>> {
    return this.write(submitter, 'verdicts', { dispute: disputeId, verdicts });
  }
  settleEpoch(gateway: LedgerSigner, batch: EpochBatch): Promise<LedgerResult<EpochOutcome>> {
    if (!batch || !Array.isArray(batch.charges) || !Array.isArray(batch.credits))
      return Promise.resolve(reject('malformed', 'settleEpoch: batch needs charges and credits arrays'));
    let body: EventBodies['settle'];
    try {
      body = {
        epoch: batch.epoch,
        charges: batch.charges.map((c) => ({ account: c.account, amount: amountText(c.amount) })),
        credits: batch.credits.map((c) => ({ identity: c.identity, units: amountText(c.units), layerSteps: c.layerSteps })),
      };
    } catch {
      return Promise.resolve(
        reject('malformed', 'settleEpoch: every charge needs account and amount, every credit identity, units and layerSteps'),
      );
    }
    return this.write(gateway, 'settle', body);
  }
  publishReputation(gateway: LedgerSigner, epoch: number, reports: ReputationReport[]): Promise<LedgerResult<{ updated: number }>> {
    return this.write(gateway, 'reputation', { epoch, reports });
  }

  /** The operator's key when this process holds it (created here or passed in): faucet, authorise. */
  operatorKey(): LedgerSigner | undefined {
    return this.operatorSigner;
  }

  // ------------------------------------------------------------ reads

  identity(address: Address): Promise<IdentityStatus | undefined> {
    this.catchUpRead();
    const r = this.state.identity(String(address));
    return Promise.resolve(r && identityStatus(this.state, r));
  }
  account(address: Address): Promise<AccountStatus | undefined> {
    this.catchUpRead();
    const a = this.state.accounts.get(String(address).toLowerCase());
    return Promise.resolve(a && accountStatus(a));
  }
  epochs(): Promise<{ epoch: number; reputationEpoch: number }> {
    this.catchUpRead();
    return Promise.resolve({ epoch: this.state.epoch, reputationEpoch: this.state.reputationEpoch });
  }
  status(): Promise<LedgerStatus> {
    this.catchUpRead();
    return Promise.resolve(statusOf(this.state, { backend: 'sqlite', location: this.path, events: this.seq, head: this.head }));
  }
  verify(): Promise<VerifyReport> {
    const t0 = performance.now();
    const r = this.replay({ full: true, keepState: true });
    return Promise.resolve({
      ok: r.problems.length === 0,
      events: r.events,
      head: r.head,
      problems: r.problems,
      ms: Math.round(performance.now() - t0),
    });
  }
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.saveCheckpoint();
      this.db.close();
    }
    return Promise.resolve();
  }

  // ------------------------------------------------------------ internals

  private meta(key: string): string | undefined {
    return (this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }
  private setMeta(kv: Record<string, string>): void {
    const st = this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value');
    this.db.transaction(() => {
      for (const [k, v] of Object.entries(kv)) st.run(k, v);
    })();
  }

  /**
   * Everything this process holds was verified: it wrote those events itself (signed and applied
   * them) or applied them with every signature checked while catching up. Recording that prefix
   * lets the next open skip re-verifying its signatures (the chain and the state are still replayed).
   */
  private saveCheckpoint(): void {
    const at = Number(this.meta('checkpoint_seq') ?? 0);
    if (this.seq > at) this.setMeta({ checkpoint_seq: String(this.seq), checkpoint_hash: this.head });
  }

  private createGenesis(o: SqliteLedgerOptions): void {
    const params = makeParams(o.params);
    let operator = o.operator;
    if (!operator) {
      const id = generateIdentity();
      operator = id;
      this.setMeta({ operator_secret: bytesToHex(id.secret) });
    }
    const r = this.writeSync(operator, 'genesis', {
      params: paramsJson(params),
      chainId: o.chainId ?? DEV_CHAIN_ID,
      operator: operator.address,
    });
    if (!r.ok) throw new Error(`genesis rejected: ${r.reason}`);
    this.setMeta({ checkpoint_seq: String(this.seq), checkpoint_hash: this.head });
  }

  private write<T extends object>(signer: LedgerSigner, kind: EventKind, body: EventBodies[EventKind]): Promise<LedgerResult<T>> {
    return Promise.resolve(this.writeSync(signer, kind, body) as LedgerResult<T>);
  }

  private writeSync(signer: LedgerSigner, kind: EventKind, body: EventBodies[EventKind]): LedgerResult {
    if (this.closed) throw new Error('ledger is closed');
    if (!signer || typeof signer.address !== 'string' || !(signer.secret instanceof Uint8Array))
      return reject('malformed', 'the submitter must be a key (address and secret)');
    const wanted = DURABLE_KINDS.has(kind) ? 'FULL' : 'NORMAL';
    if (wanted !== this.sync) {
      this.db.pragma(`synchronous = ${wanted}`);
      this.sync = wanted;
    }
    try {
      return this.db
        .transaction((): LedgerResult => {
          this.catchUp();
          const raw: LedgerEvent = {
            v: 1,
            ledger: kind === 'genesis' ? ZERO_HASH : this.state.ledger,
            kind,
            submitter: signer.address,
            nonce: (this.state.nonces.get(signer.address.toLowerCase()) ?? 0) + 1,
            time: this.clock(),
            body,
          };
          let text: string;
          try {
            text = canonicalJson(raw);
          } catch (e) {
            return reject('malformed', (e as Error).message);
          }
          if (text.length > MAX_EVENT_BYTES) return reject('malformed', `event of ${text.length} bytes exceeds ${MAX_EVENT_BYTES}`);
          // apply exactly what a replay will read back
          const event = JSON.parse(text) as LedgerEvent;
          const signed = signEvent(event, signer);
          const hash = chainHash(this.head, eventDigest(event), signed.signature);
          const r = apply(this.state, signed, hash);
          if (!r.ok) return r;
          const seq = this.seq + 1;
          this.st.insert.run(seq, kind, event.submitter.toLowerCase(), event.nonce, event.time, text, signed.signature, hash);
          this.flush(this.state.takeDirty());
          this.seq = seq;
          this.head = hash;
          if (seq % CHECKPOINT_EVERY === 0) this.saveCheckpoint();
          return { ok: true, event: { seq, hash }, ...r.result };
        })
        .immediate();
    } catch (e) {
      // the transaction rolled back: the in-memory state may be ahead of the file, rebuild it
      this.reload();
      throw e;
    }
  }

  private flush(dirty: Map<Table, Set<string>>): void {
    const { upsert: up, remove: del } = this.st;
    for (const [tbl, keys] of dirty)
      for (const key of keys) {
        const k = tbl === 'globals' ? 'state' : key;
        const v = rowsOf(this.state, tbl, k);
        if (v === undefined) del.run(tbl, k);
        else up.run(tbl, k, v);
      }
  }

  /** Applies events other processes appended since we last looked (inside a transaction). */
  private catchUp(): void {
    const rows = this.st.after.all(this.seq) as EventRow[];
    for (const row of rows) {
      const event = JSON.parse(row.event) as LedgerEvent;
      const signed: SignedEvent = { event, signature: row.signature as Hex };
      const hash = chainHash(this.head, eventDigest(event), signed.signature);
      if (hash !== row.hash || row.seq !== this.seq + 1)
        throw new LedgerCorruptError([`event ${row.seq}: chain hash mismatch while catching up`]);
      const r = apply(this.state, signed, hash);
      if (!r.ok) throw new LedgerCorruptError([`event ${row.seq} (appended by another process) does not apply: ${r.reason}`]);
      this.seq = row.seq;
      this.head = hash;
    }
    if (rows.length) this.state.takeDirty(); // its writer stored those rows already
  }

  private catchUpRead(): void {
    if (this.closed) throw new Error('ledger is closed');
    this.db.transaction(() => this.catchUp())();
  }

  private reload(): void {
    const r = this.replay({ full: false, keepState: false });
    if (r.problems.length) throw new LedgerCorruptError(r.problems);
  }

  /**
   * Replays the whole log into a fresh state: chain hashes, canonical encoding, signatures
   * (all of them when `full`, else only after the checkpoint), apply, then compares with the
   * stored rows and checks the invariants. Adopts the replayed state unless `keepState`.
   */
  private replay(o: { full: boolean; keepState?: boolean }): { problems: string[]; events: number; head: Hex } {
    const problems: string[] = [];
    const checkpoint = o.full ? 0 : Number(this.meta('checkpoint_seq') ?? 0);
    const checkpointHash = this.meta('checkpoint_hash');
    const fresh = new LedgerState();
    let head: Hex = GENESIS_PREV;
    let seq = 0;
    const rows = this.db.prepare('SELECT seq, event, signature, hash FROM events ORDER BY seq').iterate() as IterableIterator<EventRow>;
    for (const row of rows) {
      if (problems.length > 20) break;
      if (row.seq !== seq + 1) problems.push(`event ${row.seq}: gap after ${seq}`);
      let event: LedgerEvent;
      try {
        event = JSON.parse(row.event) as LedgerEvent;
      } catch {
        problems.push(`event ${row.seq}: not JSON`);
        break;
      }
      if (canonicalJson(event) !== row.event) problems.push(`event ${row.seq}: not in canonical form`);
      const signed: SignedEvent = { event, signature: row.signature as Hex };
      const trusted = row.seq <= checkpoint;
      if (!trusted) {
        const err = checkEventSignature(signed);
        if (err) problems.push(`event ${row.seq}: ${err}`);
      }
      const hash = chainHash(head, eventDigest(event), signed.signature);
      if (hash !== row.hash) {
        problems.push(`event ${row.seq}: chain hash ${row.hash} ≠ recomputed ${hash}`);
        break;
      }
      if (row.seq === checkpoint && checkpointHash && checkpointHash !== hash) problems.push(`event ${row.seq}: checkpoint hash differs`);
      const r = apply(fresh, signed, hash, { trust: trusted });
      if (!r.ok) problems.push(`event ${row.seq} (${event.kind}) does not apply: ${r.reason}`);
      head = hash;
      seq = row.seq;
    }
    fresh.takeDirty();
    // the stored rows must be exactly the replayed state
    const stored = this.db.prepare('SELECT tbl, key, value FROM state').all() as { tbl: Table; key: string; value: string }[];
    const storedMap = new Map(stored.map((r) => [`${r.tbl}\u0000${r.key}`, r.value]));
    const replayed = new Map<string, string>();
    for (const t of TABLES) for (const k of keysOf(fresh, t)) replayed.set(`${t}\u0000${k}`, rowsOf(fresh, t, k)!);
    for (const [k, v] of replayed) {
      const s = storedMap.get(k);
      if (s === undefined) problems.push(`state row ${k.replace('\u0000', '/')} missing`);
      else if (s !== v) problems.push(`state row ${k.replace('\u0000', '/')} differs from the replay`);
    }
    for (const k of storedMap.keys()) if (!replayed.has(k)) problems.push(`state row ${k.replace('\u0000', '/')} has no event behind it`);
    // and a state rebuilt from the rows must read back identically (the row format round-trips)
    if (!problems.length) {
      const back = stateFromRows(stored.map((r) => ({ table: r.tbl, key: r.key, value: r.value })));
      for (const t of TABLES)
        for (const k of keysOf(back, t))
          if (rowsOf(back, t, k) !== replayed.get(`${t}\u0000${k}`)) problems.push(`state row ${t}/${k} does not round-trip`);
    }
    problems.push(...checkInvariants(fresh));
    if (!o.keepState) {
      this.state = fresh;
      this.seq = seq;
      this.head = head;
    }
    return { problems, events: seq, head };
  }
}

function amountText(a: bigint): string {
  // a non-bigint (or negative) amount becomes text apply() rejects as malformed
  return typeof a === 'bigint' ? a.toString() : `invalid:${String(a)}`;
}
