// Slashing protection that survives a crash, like an Ethereum validator's slashing-protection
// database: a SQLite file naming the sessions this node has signed receipts for. The SlotGuard
// (slot-guard.ts) writes a session here durably BEFORE its first receipt is signed (and again
// every half challenge window while it lasts); a node killed at any instant and restarted with
// the same key loads the sessions signed for inside the window and signs no step of them again.
// A session's KV cache does not survive a restart either, so nothing honest is lost: routes
// re-open on new session ids. One write per session, not per token: with 'full' (default) it is
// fsynced (survives a power cut, a few ms once per session); 'normal' leaves it to the OS, which
// keeps it across a killed process but not across a power cut.
// Bounded like the guard: rows older than the challenge window are pruned in batches, and only
// rows inside the window are loaded at start. The file names the address it protects; opening
// it with another key is refused (an operator mixing up data directories would otherwise lose
// its protection silently).

import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

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
  /** sessions recorded at or after `since` */
  load(since: number): SignedSession[];
  /** durably records a session before a receipt of it is signed (throws: no receipt) */
  record(s: SignedSession): void;
  /** forgets sessions last recorded before `before` */
  prune(before: number): void;
  close(): void;
}

/** SQLite slashing-protection database of one signing identity. */
export class SlashingProtectionDb implements SlotJournal {
  private readonly db: Database.Database;
  private readonly insert: Database.Statement<[string, number]>;
  private readonly del: Database.Statement<[number]>;
  private readonly select: Database.Statement<[number], { session: string; at: number }>;

  /** Opens (or creates) the file for `signer`; refuses a file that protects another address. */
  constructor(
    readonly path: string,
    signer: string,
    sync: ProtectionSync = 'full',
  ) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    try {
      this.db.pragma('journal_mode = WAL');
      this.db.pragma(`synchronous = ${sync === 'normal' ? 'NORMAL' : 'FULL'}`);
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS signed_sessions (session TEXT PRIMARY KEY, at INTEGER NOT NULL);
        CREATE INDEX IF NOT EXISTS signed_sessions_at ON signed_sessions(at);`);
      const row = this.db.prepare<[], { v: string }>(`SELECT v FROM meta WHERE k = 'signer'`).get();
      if (!row) this.db.prepare(`INSERT INTO meta (k, v) VALUES ('signer', ?)`).run(signer.toLowerCase());
      else if (row.v !== signer.toLowerCase())
        throw new Error(`slashing-protection database ${path} belongs to ${row.v}, not to this node's key ${signer}: use its own file`);
      this.insert = this.db.prepare(`INSERT OR REPLACE INTO signed_sessions (session, at) VALUES (?, ?)`);
      this.del = this.db.prepare(`DELETE FROM signed_sessions WHERE at < ?`);
      this.select = this.db.prepare(`SELECT session, at FROM signed_sessions WHERE at >= ? ORDER BY at, rowid`);
    } catch (e) {
      this.db.close();
      throw e;
    }
  }

  load(since: number): SignedSession[] {
    return this.select.all(since).map((r) => ({ session: r.session, at: r.at }));
  }

  record(s: SignedSession): void {
    this.insert.run(s.session, s.at);
  }

  prune(before: number): void {
    this.del.run(before);
  }

  /** rows on file (tests, status) */
  count(): number {
    return this.db.prepare<[], { n: number }>(`SELECT count(*) AS n FROM signed_sessions`).get()!.n;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
