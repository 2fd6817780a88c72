// Slashing protection that survives a crash, like an Ethereum validator's slashing-protection
// database: a SQLite file naming the sessions this node has signed receipts for. The SlotGuard
// (slot-guard.ts) has a session written here durably when the session opens, before the node
// forwards its OPEN or answers OPENED (and again, in the background, every quarter challenge
// window while it lasts), and signs no receipt of a session that is not on file; a node killed
// at any instant and restarted with the same key loads the sessions signed for inside the
// window and signs no step of them again. A session's KV cache does not survive a restart
// either, so nothing honest is lost: routes re-open on new session ids.
// The writes (one per session, none per token) run on a worker thread with its own connection
// to the file, so their fsync never stalls the token path: with 'full' (default) each is
// fsynced (survives a power cut, a few ms once per session, off the main thread); 'normal'
// leaves it to the OS, which keeps it across a killed process but not across a power cut.
// Bounded like the guard: rows older than the challenge window are pruned in batches (on the
// worker), and only rows inside the window are loaded at start. The file names the address it
// protects; opening it with another key is refused (an operator mixing up data directories
// would otherwise lose its protection silently).

import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';

/** fsync each write ('full'), or leave it to the OS ('normal': safe against a killed process, not a power cut) */
export type ProtectionSync = 'full' | 'normal';

/** A session the guard signed for, and when that was last recorded. */
export interface SignedSession {
  /** `requestId|sessionId` (SlotGuard.sessionOf) */
  session: string;
  /** ms since the epoch */
  at: number;
}

/** Where a SlotGuard keeps the sessions it signed for beyond its own memory (none: in memory only). */
export interface SlotJournal {
  /** sessions recorded at or after `since` (at start, before any step) */
  load(since: number): SignedSession[];
  /** durably records a session; resolves once it is on file (rejects: no receipt of it may be signed) */
  record(s: SignedSession): Promise<void>;
  /** forgets sessions last recorded before `before` (in the background) */
  prune(before: number): void;
  close(): Promise<void>;
}

/** a job of the journal's writer thread (slashing-worker.ts) */
export type JournalJob = { id: number; op: 'record'; session: string; at: number } | { id: number; op: 'prune'; before: number } | { id: number; op: 'close' };

/** Opens the file, creating its tables; refuses a file that protects another address (signer undefined: checked already). */
export function openProtectionFile(path: string, signer: string | undefined, sync: ProtectionSync): Database.Database {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${sync === 'normal' ? 'NORMAL' : 'FULL'}`);
    db.pragma('busy_timeout = 5000'); // two connections (reader here, writer thread) share the file
    db.exec(`
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS signed_sessions (session TEXT PRIMARY KEY, at INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS signed_sessions_at ON signed_sessions(at);`);
    const row = db.prepare<[], { v: string }>(`SELECT v FROM meta WHERE k = 'signer'`).get();
    if (signer === undefined) return db;
    if (!row) db.prepare(`INSERT INTO meta (k, v) VALUES ('signer', ?)`).run(signer.toLowerCase());
    else if (row.v !== signer.toLowerCase())
      throw new Error(`slashing-protection database ${path} belongs to ${row.v}, not to this node's key ${signer}: use its own file`);
    return db;
  } catch (e) {
    db.close();
    throw e;
  }
}

/** The journal's statements on one connection (the writer thread's, or the calling thread's). */
export class JournalWriter {
  private readonly insert: Database.Statement<[string, number]>;
  private readonly del: Database.Statement<[number]>;
  constructor(db: Database.Database) {
    this.insert = db.prepare(`INSERT OR REPLACE INTO signed_sessions (session, at) VALUES (?, ?)`);
    this.del = db.prepare(`DELETE FROM signed_sessions WHERE at < ?`);
  }
  record(session: string, at: number): void {
    this.insert.run(session, at);
  }
  prune(before: number): void {
    this.del.run(before);
  }
}

/** SQLite slashing-protection database of one signing identity (writes on a worker thread). */
export class SlashingProtectionDb implements SlotJournal {
  private readonly db: Database.Database;
  private readonly select: Database.Statement<[number], { session: string; at: number }>;
  private worker?: Worker;
  /** the calling thread's writer: ':memory:' files, or when the worker cannot start or died */
  private local?: JournalWriter;
  private next = 1;
  private readonly pending = new Map<number, { resolve(): void; reject(e: Error): void }>();

  /** Opens (or creates) the file for `signer`; refuses a file that protects another address. */
  constructor(
    readonly path: string,
    signer: string,
    private readonly sync: ProtectionSync = 'full',
  ) {
    this.db = openProtectionFile(path, signer, sync);
    this.select = this.db.prepare(`SELECT session, at FROM signed_sessions WHERE at >= ? ORDER BY at, rowid`);
    if (path === ':memory:') this.local = new JournalWriter(this.db);
    else this.startWorker();
  }

  private startWorker(): void {
    try {
      const w = new Worker(new URL('./slashing-worker.js', import.meta.url), { workerData: { path: this.path, sync: this.sync } });
      w.unref();
      w.on('message', (m: { id: number; error?: string }) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.error !== undefined) p.reject(new Error(m.error));
        else p.resolve();
      });
      const die = (e: Error) => {
        if (this.worker !== w) return;
        this.worker = undefined;
        // what the thread had not confirmed is not on file: those sessions sign nothing
        for (const p of this.pending.values()) p.reject(e);
        this.pending.clear();
        if (this.db.open) this.local = new JournalWriter(this.db);
      };
      w.on('error', die);
      w.on('exit', (code) => die(new Error(`slashing-protection writer exited (${code})`)));
      this.worker = w;
    } catch {
      this.local = new JournalWriter(this.db);
    }
  }

  private job(j: JournalJob extends infer J ? (J extends unknown ? Omit<J, 'id'> : never) : never): Promise<void> {
    const w = this.worker;
    if (!w) return Promise.reject(new Error('no writer'));
    const id = this.next++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.postMessage({ ...j, id });
    });
  }

  load(since: number): SignedSession[] {
    return this.select.all(since).map((r) => ({ session: r.session, at: r.at }));
  }

  record(s: SignedSession): Promise<void> {
    if (!this.db.open) return Promise.reject(new Error('slashing-protection database is closed'));
    if (!this.worker) {
      try {
        this.local!.record(s.session, s.at);
        return Promise.resolve();
      } catch (e) {
        return Promise.reject(e as Error);
      }
    }
    return this.job({ op: 'record', session: s.session, at: s.at });
  }

  prune(before: number): void {
    if (!this.db.open) return;
    if (!this.worker) return this.local!.prune(before);
    this.job({ op: 'prune', before }).catch(() => undefined);
  }

  /** rows on file (tests, status) */
  count(): number {
    return this.db.prepare<[], { n: number }>(`SELECT count(*) AS n FROM signed_sessions`).get()!.n;
  }

  /** Waits for the writes in flight, then closes the file. */
  async close(): Promise<void> {
    const w = this.worker;
    if (w) {
      await this.job({ op: 'close' }).catch(() => undefined);
      this.worker = undefined;
      await w.terminate();
    }
    if (this.db.open) this.db.close();
  }
}
