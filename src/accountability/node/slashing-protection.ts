// Slashing protection that survives a crash: the SlotGuard's record of signed slots kept in a
// SQLite file, like an Ethereum validator's slashing-protection database. A slot is written
// BEFORE its receipt is signed, so a node killed at any instant and restarted with the same key
// remembers every receipt that could have left it and refuses a different input or output for
// that slot (slot-guard.ts). Durability (WAL): 'full' (default) fsyncs each slot, so it also
// survives a power cut (measured ~4 ms per step on a busy 2-core VM, ~0.1 ms with 'normal');
// 'normal' leaves the write to the OS, which keeps it across a killed process but not across
// a power cut — what one-machine swarms (demo, tests: src/node/process.ts) use.
// Bounded like the guard: rows older than the challenge window are pruned in batches, and only
// rows inside the window are loaded at start. The file names the address it protects; opening
// it with another key is refused (an operator mixing up data directories would otherwise lose
// its protection silently).

import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/** fsync every slot ('full'), or leave it to the OS ('normal': safe against a killed process, not a power cut) */
export type ProtectionSync = 'full' | 'normal';

/** One signed slot as the guard remembers it. */
export interface SignedSlot {
  key: string;
  inputHash: string;
  outputHash: string;
  owner: string;
  /** when it was signed, ms since the epoch */
  at: number;
}

/** Where a SlotGuard keeps its signed slots beyond its own memory (none: in memory only). */
export interface SlotJournal {
  /** slots signed at or after `since`, oldest first */
  load(since: number): SignedSlot[];
  /** durably records a slot before its receipt is signed (throws: no receipt) */
  record(s: SignedSlot): void;
  /** forgets slots signed before `before` */
  prune(before: number): void;
  close(): void;
}

/** SQLite slashing-protection database of one signing identity. */
export class SlashingProtectionDb implements SlotJournal {
  private readonly db: Database.Database;
  private readonly insert: Database.Statement<[string, string, string, string, number]>;
  private readonly del: Database.Statement<[number]>;
  private readonly select: Database.Statement<[number], { slot: string; input_hash: string; output_hash: string; owner: string; at: number }>;

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
        CREATE TABLE IF NOT EXISTS signed_slots (
          slot TEXT PRIMARY KEY, input_hash TEXT NOT NULL, output_hash TEXT NOT NULL, owner TEXT NOT NULL, at INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS signed_slots_at ON signed_slots(at);`);
      const row = this.db.prepare<[], { v: string }>(`SELECT v FROM meta WHERE k = 'signer'`).get();
      if (!row) this.db.prepare(`INSERT INTO meta (k, v) VALUES ('signer', ?)`).run(signer.toLowerCase());
      else if (row.v !== signer.toLowerCase())
        throw new Error(`slashing-protection database ${path} belongs to ${row.v}, not to this node's key ${signer}: use its own file`);
      this.insert = this.db.prepare(`INSERT OR REPLACE INTO signed_slots (slot, input_hash, output_hash, owner, at) VALUES (?, ?, ?, ?, ?)`);
      this.del = this.db.prepare(`DELETE FROM signed_slots WHERE at < ?`);
      this.select = this.db.prepare(`SELECT slot, input_hash, output_hash, owner, at FROM signed_slots WHERE at >= ? ORDER BY at, rowid`);
    } catch (e) {
      this.db.close();
      throw e;
    }
  }

  load(since: number): SignedSlot[] {
    return this.select
      .all(since)
      .map((r) => ({ key: r.slot, inputHash: r.input_hash, outputHash: r.output_hash, owner: r.owner, at: r.at }));
  }

  record(s: SignedSlot): void {
    this.insert.run(s.key, s.inputHash, s.outputHash, s.owner, s.at);
  }

  prune(before: number): void {
    this.del.run(before);
  }

  /** rows on file (tests, status) */
  count(): number {
    return this.db.prepare<[], { n: number }>(`SELECT count(*) AS n FROM signed_slots`).get()!.n;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
